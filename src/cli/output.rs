//! How list and inspect verbs print, as docker prints: aligned tables, `-q` ids, `--filter`,
//! and `--format` with Go-template placeholders (`{{.Name}}`, `{{json .}}`,
//! `table {{.Name}}\t{{.Image}}`).
//!
//! The template engine is a small one of our own rather than a crate: docker's formats use field
//! lookups and a handful of functions (`json`, `upper`, `lower`, `join`, `index`, `truncate`,
//! `title`), and `table` and its header row are docker's own convention that no template crate
//! knows; the rows are `serde_json` objects with docker's field names, so no data model is needed
//! beyond that.

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// One row: docker's field names (`ID`, `Name`, `Replicas`...) and their values.
pub type Row = Map<String, Value>;

/// What `--format` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    /// The default table.
    Table,
    /// JSON: shoal's API objects (an array for lists, one object per line for inspect).
    Json,
    /// `table TEMPLATE`: a table whose columns the template gives.
    TableTemplate(Template),
    /// One line per item from the template.
    Template(Template),
}

impl Format {
    /// Parses a `--format` value.
    pub fn parse(text: &str) -> Result<Format, String> {
        let trimmed = text.trim();
        match trimmed {
            "" | "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            _ => match trimmed.strip_prefix("table ") {
                Some(rest) => Template::parse(rest).map(Format::TableTemplate),
                None => Template::parse(text).map(Format::Template),
            },
        }
    }
}

/// A parsed Go-style template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Action(Expr),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// `.A.B` (empty path: `.`).
    Field(Vec<String>),
    /// A quoted string or a number.
    Literal(Value),
    /// `func arg...`.
    Call(String, Vec<Expr>),
}

impl Template {
    /// Parses `text`; `\t` and `\n` written as two characters become a tab and a newline, as in
    /// docker.
    pub fn parse(text: &str) -> Result<Template, String> {
        let text = text.replace("\\t", "\t").replace("\\n", "\n");
        let mut parts = Vec::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("template: unclosed action in {text:?}"))?;
            let inner = after[..end]
                .trim()
                .trim_start_matches('-')
                .trim_end_matches('-');
            parts.push(Part::Action(parse_expr(inner.trim())?));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// Renders the template for one row.
    pub fn render(&self, row: &Value) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Action(e) => out.push_str(&text_of(&eval(e, row)?)),
            }
        }
        Ok(out)
    }

    /// Column headers for `table TEMPLATE`: each action's field name in upper case, with spaces
    /// between words (`.DesiredState` → `DESIRED STATE`); the text between actions is kept, so
    /// the tabs that separate columns separate headers too.
    fn header(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Action(e) => out.push_str(&header_of(e)),
            }
        }
        out
    }
}

fn header_of(e: &Expr) -> String {
    match e {
        Expr::Field(path) if !path.is_empty() => words_upper(path.last().unwrap()),
        Expr::Call(_, args) => args.iter().map(header_of).collect::<Vec<_>>().join(" "),
        _ => String::new(),
    }
}

/// `DesiredState` → `DESIRED STATE`, `ID` → `ID`.
fn words_upper(name: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let boundary = i > 0
            && c.is_uppercase()
            && (chars[i - 1].is_lowercase()
                || chars.get(i + 1).is_some_and(|n| n.is_lowercase())
                    && chars[i - 1].is_uppercase());
        if boundary {
            out.push(' ');
        }
        out.extend(c.to_uppercase());
    }
    out
}

fn parse_expr(text: &str) -> Result<Expr, String> {
    let words = split_words(text)?;
    let Some(first) = words.first() else {
        return Err("template: empty action".into());
    };
    if first.starts_with('.') || first.starts_with('"') || first.parse::<i64>().is_ok() {
        if words.len() > 1 {
            return Err(format!("template: unexpected {:?} after {first}", words[1]));
        }
        return operand(first);
    }
    let args = words[1..]
        .iter()
        .map(|w| operand(w))
        .collect::<Result<Vec<_>, _>>()?;
    match first.as_str() {
        "json" | "upper" | "lower" | "title" | "join" | "index" | "truncate" | "len" => {
            Ok(Expr::Call(first.clone(), args))
        }
        other => Err(format!(
            "template: function {other:?} not defined (shoal knows json, upper, lower, title, \
             join, index, truncate, len)"
        )),
    }
}

fn operand(word: &str) -> Result<Expr, String> {
    if word == "." {
        return Ok(Expr::Field(Vec::new()));
    }
    if let Some(path) = word.strip_prefix('.') {
        return Ok(Expr::Field(path.split('.').map(str::to_string).collect()));
    }
    if word.starts_with('"') {
        return serde_json::from_str::<String>(word)
            .map(|s| Expr::Literal(Value::String(s)))
            .map_err(|_| format!("template: bad string {word}"));
    }
    if let Ok(n) = word.parse::<i64>() {
        return Ok(Expr::Literal(Value::from(n)));
    }
    Err(format!("template: unexpected {word:?}"))
}

/// Splits an action into words, keeping quoted strings whole.
fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            let mut word = String::from('"');
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                word.push(c);
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        word.push(n);
                    }
                } else if c == '"' {
                    closed = true;
                    break;
                }
            }
            if !closed {
                return Err(format!("template: unclosed string in {text:?}"));
            }
            words.push(word);
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
            words.push(word);
        }
    }
    Ok(words)
}

fn eval(e: &Expr, row: &Value) -> Result<Value, String> {
    match e {
        Expr::Literal(v) => Ok(v.clone()),
        Expr::Field(path) => {
            let mut v = row;
            for name in path {
                v = match v {
                    Value::Object(m) => m.get(name).ok_or_else(|| {
                        let known: Vec<&str> = m.keys().map(String::as_str).collect();
                        format!(
                            "template: can't evaluate field {name} (fields: {})",
                            known.join(", ")
                        )
                    })?,
                    _ => return Err(format!("template: can't evaluate field {name}")),
                };
            }
            Ok(v.clone())
        }
        Expr::Call(f, args) => {
            let args = args
                .iter()
                .map(|a| eval(a, row))
                .collect::<Result<Vec<_>, _>>()?;
            let one = || {
                args.first()
                    .cloned()
                    .ok_or_else(|| format!("template: {f} needs an argument"))
            };
            match f.as_str() {
                "json" => Ok(Value::String(
                    serde_json::to_string(&one()?).unwrap_or_default(),
                )),
                "upper" => Ok(Value::String(text_of(&one()?).to_uppercase())),
                "lower" => Ok(Value::String(text_of(&one()?).to_lowercase())),
                "title" => {
                    let t = text_of(&one()?);
                    let mut c = t.chars();
                    Ok(Value::String(match c.next() {
                        Some(first) => first.to_uppercase().chain(c).collect(),
                        None => String::new(),
                    }))
                }
                "len" => Ok(Value::from(match one()? {
                    Value::Array(a) => a.len(),
                    Value::Object(m) => m.len(),
                    v => text_of(&v).chars().count(),
                })),
                "join" => match args.as_slice() {
                    [Value::Array(items), sep] => Ok(Value::String(
                        items
                            .iter()
                            .map(text_of)
                            .collect::<Vec<_>>()
                            .join(&text_of(sep)),
                    )),
                    _ => Err("template: join takes a list and a separator".into()),
                },
                "index" => match args.as_slice() {
                    [Value::Object(m), key] => {
                        Ok(m.get(&text_of(key)).cloned().unwrap_or(Value::Null))
                    }
                    [Value::Array(a), Value::Number(n)] => Ok(n
                        .as_u64()
                        .and_then(|i| a.get(i as usize))
                        .cloned()
                        .unwrap_or(Value::Null)),
                    _ => Err("template: index takes a map and a key".into()),
                },
                "truncate" => match args.as_slice() {
                    [v, Value::Number(n)] => {
                        let n = n.as_u64().unwrap_or(0) as usize;
                        Ok(Value::String(text_of(v).chars().take(n).collect()))
                    }
                    _ => Err("template: truncate takes a value and a length".into()),
                },
                _ => Err(format!("template: function {f:?} not defined")),
            }
        }
    }
}

/// A value as Go's template prints it.
fn text_of(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(text_of).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", text_of(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// Columns aligned as docker's tabwriter aligns them (cells padded to the widest plus three
/// spaces, at least ten wide); no leading space, no trailing spaces.
pub fn align(lines: &[String]) -> String {
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in &rows {
        // The last cell of a line is not a column: it is never padded.
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            widths[i] = widths[i].max(cell.chars().count() + 3).max(10);
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                let _ = write!(line, "{cell:<width$}", width = widths[i]);
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A list to print: rows with docker's field names, the default table's columns, and the JSON
/// form (shoal's API objects).
pub struct Listing<'a> {
    /// One per item.
    pub rows: Vec<Row>,
    /// `(header, field)` of the default table.
    pub columns: &'a [(&'a str, &'a str)],
    /// What `--format json` prints.
    pub json: Value,
    /// The field `-q` prints.
    pub id_field: &'a str,
}

impl Listing<'_> {
    /// The text to print for `format` (`quiet`: ids only).
    pub fn render(&self, format: &Format, quiet: bool) -> Result<String, String> {
        if quiet {
            let mut out = String::new();
            for row in &self.rows {
                out.push_str(&text_of(row.get(self.id_field).unwrap_or(&Value::Null)));
                out.push('\n');
            }
            return Ok(out);
        }
        match format {
            Format::Json => Ok(serde_json::to_string_pretty(&self.json).unwrap_or_default() + "\n"),
            Format::Table => {
                let mut lines = vec![self
                    .columns
                    .iter()
                    .map(|(h, _)| *h)
                    .collect::<Vec<_>>()
                    .join("\t")];
                for row in &self.rows {
                    lines.push(
                        self.columns
                            .iter()
                            .map(|(_, f)| match row.get(*f) {
                                Some(Value::Null) | None => String::new(),
                                Some(v) => text_of(v),
                            })
                            .collect::<Vec<_>>()
                            .join("\t"),
                    );
                }
                Ok(align(&lines))
            }
            Format::TableTemplate(t) => {
                let mut lines = vec![t.header()];
                for row in &self.rows {
                    lines.push(t.render(&Value::Object(row.clone()))?);
                }
                Ok(align(&lines))
            }
            Format::Template(t) => {
                let mut out = String::new();
                for row in &self.rows {
                    out.push_str(&t.render(&Value::Object(row.clone()))?);
                    out.push('\n');
                }
                Ok(out)
            }
        }
    }
}

/// What an `inspect` verb prints of `objects` for its `--format`: a JSON array by default, as
/// docker's; `json`: one object a line; anything else: the template, once per object.
pub fn render_inspected(objects: &[Value], format: Option<&str>) -> Result<String, String> {
    match format {
        None => Ok(serde_json::to_string_pretty(objects).map_err(|e| e.to_string())? + "\n"),
        Some("json") => {
            let mut out = String::new();
            for o in objects {
                out.push_str(&o.to_string());
                out.push('\n');
            }
            Ok(out)
        }
        Some(template) => {
            let t = Template::parse(template)?;
            let mut out = String::new();
            for o in objects {
                out.push_str(&t.render(o)?);
                out.push('\n');
            }
            Ok(out)
        }
    }
}

/// A `--filter KEY=VALUE`, parsed, checked against the keys a verb accepts.
pub fn parse_filters(filters: &[String], known: &[&str]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for f in filters {
        let Some((k, v)) = f.split_once('=') else {
            return Err(format!("bad format of filter (expected name=value): {f}"));
        };
        if !known.contains(&k) {
            return Err(format!(
                "invalid filter '{k}' (this command filters on {})",
                known.join(", ")
            ));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Whether `row` passes every filter, docker's way: filters of the same key are alternatives
/// (any may match), different keys must all match. `test(key, value)` says whether one holds.
pub fn passes(filters: &[(String, String)], test: impl Fn(&str, &str) -> bool) -> bool {
    let mut keys: Vec<&str> = filters.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter().all(|key| {
        filters
            .iter()
            .filter(|(k, _)| k == key)
            .any(|(_, v)| test(key, v))
    })
}

/// A `label=KEY` or `label=KEY=VALUE` filter against labels.
pub fn label_matches(labels: &std::collections::BTreeMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(filter),
    }
}

/// `text` cut to `len` characters with an ellipsis, unless `no_trunc`.
pub fn trunc(text: &str, len: usize, no_trunc: bool) -> String {
    if no_trunc || text.chars().count() <= len {
        text.to_string()
    } else {
        let mut out: String = text.chars().take(len.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// An id cut to 12 characters, unless `no_trunc` (ids are not given an ellipsis, as in docker).
pub fn short_id(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        id.chars().take(12).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row() -> Value {
        json!({"ID": "abc", "Name": "web", "Replicas": "2/2", "DesiredState": "Running",
               "Labels": {"a": "1"}, "Ports": ["*:80->8080/tcp", "*:81->81/tcp"]})
    }

    #[test]
    fn templates_render_fields_and_functions() {
        let r = |t: &str| Template::parse(t).unwrap().render(&row()).unwrap();
        assert_eq!(r("{{.Name}} {{.Replicas}}"), "web 2/2");
        assert_eq!(r("{{ .Name }}"), "web");
        assert_eq!(r("{{json .Name}}"), "\"web\"");
        assert_eq!(r("{{upper .Name}}-{{lower .DesiredState}}"), "WEB-running");
        assert_eq!(r("{{join .Ports \",\"}}"), "*:80->8080/tcp,*:81->81/tcp");
        assert_eq!(r("{{index .Labels \"a\"}}"), "1");
        assert_eq!(r("{{.Labels.a}}"), "1");
        assert_eq!(r("{{truncate .Name 2}}"), "we");
        assert_eq!(r("{{len .Ports}}"), "2");
        assert_eq!(r("a\\tb"), "a\tb");
        let whole = r("{{json .}}");
        let back: Value = serde_json::from_str(&whole).unwrap();
        assert_eq!(back, row());
        assert!(Template::parse("{{.Name").unwrap_err().contains("unclosed"));
        assert!(Template::parse("{{frobnicate .Name}}")
            .unwrap_err()
            .contains("not defined"));
        let e = Template::parse("{{.Nope}}")
            .unwrap()
            .render(&row())
            .unwrap_err();
        assert!(
            e.contains("can't evaluate field Nope") && e.contains("Name"),
            "{e}"
        );
    }

    #[test]
    fn formats_and_tables() {
        assert_eq!(Format::parse("json"), Ok(Format::Json));
        assert_eq!(Format::parse("table"), Ok(Format::Table));
        assert!(matches!(
            Format::parse("table {{.Name}}"),
            Ok(Format::TableTemplate(_))
        ));
        let listing = Listing {
            rows: vec![row().as_object().unwrap().clone()],
            columns: &[("ID", "ID"), ("NAME", "Name"), ("REPLICAS", "Replicas")],
            json: json!([]),
            id_field: "ID",
        };
        let table = listing.render(&Format::Table, false).unwrap();
        assert_eq!(
            table,
            "ID        NAME      REPLICAS\nabc       web       2/2\n"
        );
        assert_eq!(listing.render(&Format::Table, true).unwrap(), "abc\n");
        let t = Format::parse("table {{.Name}}\\t{{.DesiredState}}").unwrap();
        assert_eq!(
            listing.render(&t, false).unwrap(),
            "NAME      DESIRED STATE\nweb       Running\n"
        );
        let t = Format::parse("{{.Name}} {{.Replicas}}").unwrap();
        assert_eq!(listing.render(&t, false).unwrap(), "web 2/2\n");
    }

    #[test]
    fn filters_combine_as_docker_does() {
        let f = parse_filters(
            &["name=a".into(), "name=b".into(), "mode=x".into()],
            &["name", "mode"],
        )
        .unwrap();
        assert!(passes(&f, |k, v| match k {
            "name" => v == "b",
            _ => v == "x",
        }));
        assert!(!passes(&f, |k, v| k == "name" && v == "b"));
        assert!(parse_filters(&["bogus=1".into()], &["name"]).is_err());
        assert!(parse_filters(&["nameonly".into()], &["name"]).is_err());
        let labels = [("a".to_string(), "1".to_string())].into_iter().collect();
        assert!(label_matches(&labels, "a") && label_matches(&labels, "a=1"));
        assert!(!label_matches(&labels, "a=2") && !label_matches(&labels, "b"));
    }

    #[test]
    fn headers_split_words() {
        assert_eq!(words_upper("DesiredState"), "DESIRED STATE");
        assert_eq!(words_upper("ID"), "ID");
        assert_eq!(words_upper("Name"), "NAME");
    }
}
