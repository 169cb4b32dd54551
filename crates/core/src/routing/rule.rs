//! Traefik's router rules (`Host(`a.com`) && PathPrefix(`/api/`)`): a parser with errors that
//! say where and why, and matching against a request.
//!
//! Grammar, as Traefik v2 and v3 read it: matchers joined by `&&` and `||` (`&&` binds tighter),
//! `!` negation and parentheses. Arguments are quoted with backticks or double quotes. Matchers
//! shoal knows: `Host`, `Path`, `PathPrefix`, `Method`, `Header`/`Headers` and `Query`, with
//! several arguments where Traefik v2 allowed them (any of them matches). Regular-expression
//! matchers (`HostRegexp`, `PathRegexp`, `HeaderRegexp`, v2's `{id:[0-9]+}` path placeholders)
//! and `ClientIP` are refused by name, so a rule is never half understood.

use serde::{Deserialize, Serialize};

/// A parsed rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Rule {
    /// Both hold.
    And(Box<Rule>, Box<Rule>),
    /// Either holds.
    Or(Box<Rule>, Box<Rule>),
    /// It does not hold.
    Not(Box<Rule>),
    /// The `Host` header (port left out, case ignored) is one of these.
    Host(Vec<String>),
    /// The path is exactly one of these.
    Path(Vec<String>),
    /// The path starts with one of these.
    PathPrefix(Vec<String>),
    /// The method is one of these (case ignored).
    Method(Vec<String>),
    /// The header (first) has the value (second).
    Header(String, String),
    /// The query has the parameter (first) with the value (second).
    Query(String, String),
}

/// What a rule looks at in a request.
pub trait HttpFacts {
    /// The `Host` header (or the URI's authority), as sent.
    fn host(&self) -> &str;
    /// The path, without the query.
    fn path(&self) -> &str;
    /// The method, upper-case.
    fn method(&self) -> &str;
    /// The query string without `?` (empty when none).
    fn query(&self) -> &str;
    /// Whether some value of header `name` equals `value`.
    fn has_header(&self, name: &str, value: &str) -> bool;
}

impl Rule {
    /// Whether a request matches.
    pub fn matches(&self, req: &dyn HttpFacts) -> bool {
        match self {
            Rule::And(a, b) => a.matches(req) && b.matches(req),
            Rule::Or(a, b) => a.matches(req) || b.matches(req),
            Rule::Not(a) => !a.matches(req),
            Rule::Host(hosts) => {
                let host = host_without_port(req.host());
                let host = host.strip_suffix('.').unwrap_or(host);
                hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
            }
            Rule::Path(paths) => paths.iter().any(|p| p == req.path()),
            Rule::PathPrefix(prefixes) => prefixes.iter().any(|p| req.path().starts_with(p)),
            Rule::Method(methods) => methods.iter().any(|m| m.eq_ignore_ascii_case(req.method())),
            Rule::Header(name, value) => req.has_header(name, value),
            Rule::Query(name, value) => req.query().split('&').any(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                k == name && v == value
            }),
        }
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `::1`.
fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Parses a rule; the error names the position (1-based character) and what was expected.
pub fn parse(text: &str) -> Result<Rule, String> {
    let tokens = tokenize(text)?;
    if tokens.is_empty() {
        return Err("empty rule".into());
    }
    let mut p = Parser { tokens, at: 0 };
    let rule = p.or()?;
    match p.tokens.get(p.at) {
        None => Ok(rule),
        Some((pos, t)) => Err(format!(
            "at character {pos}: unexpected {}; expected && or ||",
            t.describe()
        )),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Name(String),
    Text(String),
    Open,
    Close,
    Comma,
    And,
    Or,
    Not,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Name(n) => format!("`{n}`"),
            Token::Text(t) => format!("the string {t:?}"),
            Token::Open => "`(`".into(),
            Token::Close => "`)`".into(),
            Token::Comma => "`,`".into(),
            Token::And => "`&&`".into(),
            Token::Or => "`||`".into(),
            Token::Not => "`!`".into(),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let pos = i + 1;
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((pos, Token::Open));
                i += 1;
            }
            ')' => {
                out.push((pos, Token::Close));
                i += 1;
            }
            ',' => {
                out.push((pos, Token::Comma));
                i += 1;
            }
            '!' => {
                out.push((pos, Token::Not));
                i += 1;
            }
            '&' | '|' => {
                if chars.get(i + 1) != Some(&c) {
                    return Err(format!("at character {pos}: expected `{c}{c}`"));
                }
                out.push((pos, if c == '&' { Token::And } else { Token::Or }));
                i += 2;
            }
            '`' | '"' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&d| d == c)
                    .ok_or_else(|| format!("at character {pos}: unclosed {c}"))?;
                out.push((pos, Token::Text(chars[i + 1..i + 1 + end].iter().collect())));
                i += end + 2;
            }
            c if c.is_ascii_alphabetic() => {
                let len = chars[i..]
                    .iter()
                    .position(|d| !d.is_ascii_alphanumeric())
                    .unwrap_or(chars.len() - i);
                out.push((pos, Token::Name(chars[i..i + len].iter().collect())));
                i += len;
            }
            other => {
                return Err(format!(
                    "at character {pos}: unexpected {other:?} (quote values with backticks)"
                ))
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(_, t)| t)
    }

    fn position(&self) -> usize {
        self.tokens
            .get(self.at)
            .map_or_else(|| self.tokens.last().map_or(1, |(p, _)| p + 1), |(p, _)| *p)
    }

    fn unexpected(&self, wanted: &str) -> String {
        match self.tokens.get(self.at) {
            Some((pos, t)) => format!(
                "at character {pos}: unexpected {}; expected {wanted}",
                t.describe()
            ),
            None => format!("the rule ends where {wanted} was expected"),
        }
    }

    fn or(&mut self) -> Result<Rule, String> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.at += 1;
            let right = self.and()?;
            left = Rule::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Rule, String> {
        let mut left = self.unary()?;
        while self.peek() == Some(&Token::And) {
            self.at += 1;
            let right = self.unary()?;
            left = Rule::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Rule, String> {
        match self.peek() {
            Some(Token::Not) => {
                self.at += 1;
                Ok(Rule::Not(Box::new(self.unary()?)))
            }
            Some(Token::Open) => {
                let open = self.position();
                self.at += 1;
                let inner = self.or()?;
                if self.peek() != Some(&Token::Close) {
                    return Err(format!(
                        "{} (to close the `(` at character {open})",
                        self.unexpected("`)`")
                    ));
                }
                self.at += 1;
                Ok(inner)
            }
            Some(Token::Name(_)) => self.matcher(),
            _ => Err(self.unexpected("a matcher such as Host(`example.com`)")),
        }
    }

    fn matcher(&mut self) -> Result<Rule, String> {
        let pos = self.position();
        let Some(Token::Name(name)) = self.peek().cloned() else {
            return Err(self.unexpected("a matcher"));
        };
        self.at += 1;
        if self.peek() != Some(&Token::Open) {
            return Err(self.unexpected(&format!("`(` after {name}")));
        }
        self.at += 1;
        let mut args = Vec::new();
        loop {
            match self.peek().cloned() {
                Some(Token::Text(t)) => {
                    args.push(t);
                    self.at += 1;
                }
                _ => return Err(self.unexpected("a quoted value")),
            }
            match self.peek() {
                Some(Token::Comma) => self.at += 1,
                Some(Token::Close) => {
                    self.at += 1;
                    break;
                }
                _ => return Err(self.unexpected("`,` or `)`")),
            }
        }
        let at = format!("at character {pos}: {name}");
        let pair = |args: Vec<String>| -> Result<(String, String), String> {
            match <[String; 2]>::try_from(args) {
                Ok([k, v]) => Ok((k, v)),
                Err(_) => Err(format!("{at} takes two values: a name and a value")),
            }
        };
        let no_placeholder = |args: &[String]| -> Result<(), String> {
            match args.iter().find(|a| a.contains('{')) {
                Some(a) => Err(format!(
                    "{at}: {a:?} holds a regular-expression placeholder, which shoal does not \
                     support"
                )),
                None => Ok(()),
            }
        };
        match name.as_str() {
            "Host" => {
                if let Some(bad) = args.iter().find(|a| a.is_empty() || a.contains('/')) {
                    return Err(format!("{at}: {bad:?} is not a host name"));
                }
                no_placeholder(&args)?;
                Ok(Rule::Host(args))
            }
            "Path" | "PathPrefix" => {
                if let Some(bad) = args.iter().find(|a| !a.starts_with('/')) {
                    return Err(format!("{at}: {bad:?} must start with /"));
                }
                no_placeholder(&args)?;
                Ok(if name == "Path" {
                    Rule::Path(args)
                } else {
                    Rule::PathPrefix(args)
                })
            }
            "Method" => Ok(Rule::Method(args)),
            "Header" | "Headers" => pair(args).map(|(k, v)| Rule::Header(k, v)),
            "Query" => match args.as_slice() {
                // v2's one-argument form, `Query(`key=value`)`.
                [one] => {
                    let (k, v) = one.split_once('=').unwrap_or((one, ""));
                    Ok(Rule::Query(k.to_string(), v.to_string()))
                }
                _ => pair(args).map(|(k, v)| Rule::Query(k, v)),
            },
            "HostRegexp" | "PathRegexp" | "HeaderRegexp" | "HeadersRegexp" | "QueryRegexp"
            | "HostHeader" | "ClientIP" | "HostSNI" | "HostSNIRegexp" | "ALPN" => Err(format!(
                "{at}: not supported by shoal (supported: Host, Path, PathPrefix, Method, \
                 Header, Query)"
            )),
            _ => Err(format!(
                "{at}: unknown matcher (supported: Host, Path, PathPrefix, Method, Header, Query)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Req {
        host: &'static str,
        path: &'static str,
        method: &'static str,
        query: &'static str,
        headers: Vec<(&'static str, &'static str)>,
    }

    impl HttpFacts for Req {
        fn host(&self) -> &str {
            self.host
        }
        fn path(&self) -> &str {
            self.path
        }
        fn method(&self) -> &str {
            self.method
        }
        fn query(&self) -> &str {
            self.query
        }
        fn has_header(&self, name: &str, value: &str) -> bool {
            self.headers
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case(name) && *v == value)
        }
    }

    fn req(host: &'static str, path: &'static str) -> Req {
        Req {
            host,
            path,
            method: "GET",
            query: "",
            headers: vec![],
        }
    }

    fn m(rule: &str, r: &Req) -> bool {
        parse(rule).unwrap().matches(r)
    }

    #[test]
    fn matchers() {
        let r = req("Example.com:8080", "/api/users");
        assert!(m("Host(`example.com`)", &r));
        assert!(m("Host(\"a.org\", `example.com`)", &r));
        assert!(!m("Host(`a.org`)", &r));
        assert!(m("PathPrefix(`/api/`)", &r));
        assert!(m("PathPrefix(`/api`)", &r));
        assert!(!m("PathPrefix(`/app/`)", &r));
        assert!(m("Path(`/api/users`)", &r));
        assert!(!m("Path(`/api`)", &r));
        assert!(m("Method(`get`)", &r));
        assert!(!m("Method(`POST`)", &r));
        let mut q = req("x", "/");
        q.query = "a=1&b=2";
        q.headers = vec![("X-Env", "prod")];
        assert!(m("Query(`b`, `2`)", &q));
        assert!(m("Query(`a=1`)", &q));
        assert!(!m("Query(`a`, `2`)", &q));
        assert!(m("Header(`x-env`, `prod`)", &q));
        assert!(m("Headers(`X-Env`, `prod`)", &q));
        assert!(!m("Header(`X-Env`, `dev`)", &q));
        assert!(m("Host(`[::1]`) || Host(`::1`)", &req("[::1]:80", "/")));
    }

    #[test]
    fn operators_and_precedence() {
        let r = req("a.com", "/x");
        assert!(m("Host(`a.com`) && PathPrefix(`/x`)", &r));
        assert!(!m("Host(`b.com`) && PathPrefix(`/x`)", &r));
        // && binds tighter: (false && false) || true.
        assert!(m("Host(`b.com`) && Path(`/y`) || PathPrefix(`/`)", &r));
        assert!(!m("Host(`b.com`) && (Path(`/y`) || PathPrefix(`/`))", &r));
        assert!(m("!Host(`b.com`)", &r));
        assert!(!m("!(Host(`a.com`) || Host(`b.com`))", &r));
    }

    #[test]
    fn errors_say_where_and_why() {
        let e = |rule: &str| parse(rule).unwrap_err();
        assert!(e("").contains("empty"));
        assert!(e("Host(`a`").contains("`,` or `)`"), "{}", e("Host(`a`"));
        assert!(e("Host(`a) ").contains("unclosed `"));
        assert!(
            e("Host(`a`) & Path(`/`)").contains("character 11"),
            "{}",
            e("Host(`a`) & Path(`/`)")
        );
        assert!(e("Host(`a`) Path(`/`)").contains("expected && or ||"));
        assert!(e("(Host(`a`)").contains("to close the `(` at character 1"));
        assert!(e("HostRegexp(`.*`)").contains("not supported by shoal"));
        assert!(e("Hots(`a`)").contains("unknown matcher"));
        assert!(e("PathPrefix(`api`)").contains("must start with /"));
        assert!(e("Path(`/u/{id:[0-9]+}`)").contains("placeholder"));
        assert!(e("Header(`a`)").contains("two values"));
        assert!(e("Host(a.com)").contains("quote values"));
        assert!(e("Host(foo)").contains("quoted value"));
        assert!(e("Host(`a`) &&").contains("ends"));
    }
}
