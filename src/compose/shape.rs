//! A cheap first pass over a stack file's text that refuses hostile shapes before the YAML parser
//! sees them: nesting deeper than [`MAX_DEPTH`] and more than [`MAX_TOKENS`] tokens.
//!
//! Why a pass of our own: libyaml scans the whole document into events before any of our code
//! runs, and its scanner does work proportional to the flow nesting depth for every token, so
//! 100,000 nested `[` (200 KB) cost it minutes before yaml_serde's recursion limit could refuse
//! them. This pass is linear and stops at the first token over a limit, naming its line.
//!
//! It follows libyaml's scanner closely enough to know, for every character, whether libyaml
//! reads it as a token, or inside a quoted, block or plain scalar or a comment: the flow level,
//! the block indentation stack and the possible simple key are tracked as libyaml tracks them.
//! Where libyaml would stop with an error, this pass simply carries on: its count can then only
//! be too high, which costs nothing, since such a file is refused anyway. Where it could be wrong,
//! it errs towards counting a bracket, never towards hiding one.

use std::fmt;

/// Deepest nesting of collections (flow and block together) a stack file may have; real ones
/// stay under 10.
pub(crate) const MAX_DEPTH: usize = 64;
/// Most tokens (scalars, indicators, brackets) one file may have: a 5,000-line stack file has
/// about 20,000. Bounds what libyaml must scan and store.
pub(crate) const MAX_TOKENS: usize = 200_000;

/// Why a file was refused, and where (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShapeError {
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) message: String,
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Checks `text`'s nesting depth and token count.
pub(crate) fn check(text: &str) -> Result<(), ShapeError> {
    let mut s = Scanner {
        b: text.as_bytes(),
        pos: 0,
        index: 0,
        line: 0,
        col: 0,
        flow: 0,
        indent: -1,
        indents: Vec::new(),
        allowed: true,
        key: None,
        tokens: 0,
    };
    if s.b.starts_with("\u{feff}".as_bytes()) {
        s.pos = 3;
    }
    s.run()
}

/// A possible simple key in block context: where it starts.
#[derive(Clone, Copy)]
struct Key {
    line: usize,
    col: usize,
    index: usize,
}

struct Scanner<'a> {
    b: &'a [u8],
    /// Byte offset.
    pos: usize,
    /// Characters read, as libyaml's mark index counts them.
    index: usize,
    line: usize,
    /// In characters.
    col: usize,
    flow: usize,
    indent: i64,
    indents: Vec<i64>,
    /// Whether a simple key may start here (libyaml's `simple_key_allowed`).
    allowed: bool,
    /// The possible simple key of the block context (flow level 0); keys inside flow collections
    /// do not move the indentation, so they need not be tracked.
    key: Option<Key>,
    tokens: usize,
}

impl Scanner<'_> {
    fn at(&self, k: usize) -> Option<u8> {
        self.b.get(self.pos + k).copied()
    }

    fn is(&self, k: usize, c: u8) -> bool {
        self.at(k) == Some(c)
    }

    /// Length in bytes of a line break at offset `k`, if one starts there.
    fn break_at(&self, k: usize) -> Option<usize> {
        let rest = self.b.get(self.pos + k..)?;
        match rest {
            [b'\r', b'\n', ..] => Some(2),
            [b'\r' | b'\n', ..] => Some(1),
            [0xC2, 0x85, ..] => Some(2),
            [0xE2, 0x80, 0xA8 | 0xA9, ..] => Some(3),
            _ => None,
        }
    }

    fn blank_at(&self, k: usize) -> bool {
        matches!(self.at(k), Some(b' ' | b'\t'))
    }

    /// Blank, break, or the end (libyaml's `IS_BLANKZ`; a NUL byte counts as the end).
    fn blankz_at(&self, k: usize) -> bool {
        matches!(self.at(k), None | Some(0)) || self.blank_at(k) || self.break_at(k).is_some()
    }

    fn eof(&self) -> bool {
        matches!(self.at(0), None | Some(0))
    }

    /// Steps over one character (a whole UTF-8 sequence) that is not a line break.
    fn skip(&mut self) {
        let len = match self.at(0) {
            Some(c) if c >= 0xF0 => 4,
            Some(c) if c >= 0xE0 => 3,
            Some(c) if c >= 0xC0 => 2,
            _ => 1,
        };
        self.pos = (self.pos + len).min(self.b.len());
        self.index += 1;
        self.col += 1;
    }

    /// Steps over a line break if one is here.
    fn skip_break(&mut self) -> bool {
        match self.break_at(0) {
            Some(len) => {
                self.pos += len;
                self.index += 1;
                self.line += 1;
                self.col = 0;
                true
            }
            None => false,
        }
    }

    /// Moves over bytes up to the next one in `stops` (or the end), counting characters as
    /// `skip` does; the bytes passed must hold no line break.
    fn skip_until(&mut self, stops: &[u8]) {
        let rest = &self.b[self.pos..];
        let n = rest
            .iter()
            .position(|c| stops.contains(c))
            .unwrap_or(rest.len());
        // Every byte but a UTF-8 continuation byte starts a character.
        let chars = rest[..n].iter().filter(|&&c| c & 0xC0 != 0x80).count();
        self.pos += n;
        self.index += chars;
        self.col += chars;
    }

    fn skip_line(&mut self) {
        // Line breaks start with one of these bytes (NEL is C2 85, LS and PS are E2 80 A8/A9).
        const STOPS: &[u8] = &[b'\n', b'\r', 0xC2, 0xE2, 0];
        loop {
            self.skip_until(STOPS);
            if self.eof() || self.break_at(0).is_some() {
                return;
            }
            self.skip();
        }
    }

    fn fail(&self, message: String) -> ShapeError {
        ShapeError {
            line: self.line + 1,
            column: self.col + 1,
            message,
        }
    }

    fn token(&mut self) -> Result<(), ShapeError> {
        self.tokens += 1;
        if self.tokens > MAX_TOKENS {
            return Err(self.fail(format!(
                "more than {MAX_TOKENS} YAML tokens: too large for a stack file"
            )));
        }
        Ok(())
    }

    fn depth_check(&self) -> Result<(), ShapeError> {
        let depth = self.flow + self.indents.len();
        if depth > MAX_DEPTH {
            return Err(self.fail(format!(
                "nested more than {MAX_DEPTH} levels deep: too deep for a stack file"
            )));
        }
        Ok(())
    }

    fn roll_indent(&mut self, col: usize) -> Result<(), ShapeError> {
        if self.flow == 0 && self.indent < col as i64 {
            self.indents.push(self.indent);
            self.indent = col as i64;
            self.depth_check()?;
        }
        Ok(())
    }

    fn unroll_indent(&mut self, col: i64) {
        if self.flow > 0 {
            return;
        }
        while self.indent > col {
            self.indent = self.indents.pop().unwrap_or(-1);
        }
    }

    fn save_key(&mut self) {
        if self.allowed && self.flow == 0 {
            self.key = Some(Key {
                line: self.line,
                col: self.col,
                index: self.index,
            });
        }
    }

    fn run(&mut self) -> Result<(), ShapeError> {
        loop {
            self.skip_to_next_token();
            if let Some(k) = self.key {
                if k.line < self.line || k.index + 1024 < self.index {
                    self.key = None;
                }
            }
            self.unroll_indent(self.col as i64);
            if self.eof() {
                return Ok(());
            }
            self.token()?;
            let c = self.at(0).unwrap_or(0);
            let doc_marker = self.col == 0
                && (self.b[self.pos..].starts_with(b"---")
                    || self.b[self.pos..].starts_with(b"..."))
                && self.blankz_at(3);
            if self.col == 0 && c == b'%' {
                self.unroll_indent(-1);
                self.key = None;
                self.allowed = false;
                self.skip_line();
            } else if doc_marker {
                self.unroll_indent(-1);
                self.key = None;
                self.allowed = false;
                for _ in 0..3 {
                    self.skip();
                }
            } else if c == b'[' || c == b'{' {
                self.save_key();
                self.flow += 1;
                self.depth_check()?;
                self.allowed = true;
                self.skip();
            } else if c == b']' || c == b'}' {
                self.flow = self.flow.saturating_sub(1);
                self.allowed = false;
                self.skip();
            } else if c == b',' {
                self.allowed = true;
                self.skip();
            } else if c == b'-' && self.blankz_at(1) {
                if self.flow == 0 {
                    self.roll_indent(self.col)?;
                }
                self.key = None;
                self.allowed = true;
                self.skip();
            } else if c == b'?' && (self.flow > 0 || self.blankz_at(1)) {
                if self.flow == 0 {
                    self.roll_indent(self.col)?;
                }
                self.key = None;
                self.allowed = self.flow == 0;
                self.skip();
            } else if c == b':' && (self.flow > 0 || self.blankz_at(1)) {
                match self.key.take() {
                    Some(k) if self.flow == 0 => {
                        self.roll_indent(k.col)?;
                        self.allowed = false;
                    }
                    _ => {
                        if self.flow == 0 {
                            self.roll_indent(self.col)?;
                        }
                        self.allowed = self.flow == 0;
                    }
                }
                self.skip();
            } else if c == b'*' || c == b'&' {
                self.save_key();
                self.allowed = false;
                self.skip();
                while matches!(
                    self.at(0),
                    Some(b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'_' | b'-')
                ) {
                    self.skip();
                }
            } else if c == b'!' {
                self.save_key();
                self.allowed = false;
                while !self.blankz_at(0) {
                    self.skip();
                }
            } else if (c == b'|' || c == b'>') && self.flow == 0 {
                self.key = None;
                self.allowed = true;
                self.block_scalar();
            } else if c == b'\'' || c == b'"' {
                self.save_key();
                self.allowed = false;
                self.quoted(c);
            } else if self.plain_start(c) {
                self.save_key();
                self.allowed = false;
                self.plain();
            } else {
                // libyaml stops here ("cannot start any token"); so may we.
                return Ok(());
            }
        }
    }

    /// libyaml's `scan_to_next_token`: blanks, comments and line breaks.
    fn skip_to_next_token(&mut self) {
        loop {
            while self.is(0, b' ') || ((self.flow > 0 || !self.allowed) && self.is(0, b'\t')) {
                self.skip();
            }
            if self.is(0, b'#') {
                self.skip_line();
            }
            if self.skip_break() {
                if self.flow == 0 {
                    self.allowed = true;
                }
            } else {
                return;
            }
        }
    }

    fn plain_start(&self, c: u8) -> bool {
        let indicator = b"-?:,[]{}#&*!|>'\"%@`".contains(&c);
        !(self.blankz_at(0) || indicator)
            || (c == b'-' && !self.blank_at(1))
            || (self.flow == 0 && (c == b'?' || c == b':') && !self.blankz_at(1))
    }

    /// A plain scalar, which in block context continues on more indented lines.
    fn plain(&mut self) {
        let indent = self.indent + 1;
        let mut leading_blanks = false;
        loop {
            let doc_marker = self.col == 0
                && (self.b[self.pos..].starts_with(b"---")
                    || self.b[self.pos..].starts_with(b"..."))
                && self.blankz_at(3);
            if doc_marker || self.is(0, b'#') {
                break;
            }
            while !self.blankz_at(0) {
                self.skip_until(b" \t\n\r:,[]{}\xC2\xE2\0");
                if self.blankz_at(0) {
                    break;
                }
                let c = self.at(0).unwrap_or(0);
                if (c == b':' && self.blankz_at(1)) || (self.flow > 0 && b",[]{}".contains(&c)) {
                    break;
                }
                self.skip();
            }
            if !(self.blank_at(0) || self.break_at(0).is_some()) {
                break;
            }
            while self.blank_at(0) || self.break_at(0).is_some() {
                if self.skip_break() {
                    leading_blanks = true;
                } else {
                    self.skip();
                }
            }
            if self.flow == 0 && (self.col as i64) < indent {
                break;
            }
        }
        if leading_blanks {
            self.allowed = true;
        }
    }

    /// A single- or double-quoted scalar, over as many lines as it takes.
    fn quoted(&mut self, quote: u8) {
        self.skip();
        let stops: &[u8] = if quote == b'"' {
            &[b'"', b'\\', b'\n', b'\r', 0xC2, 0xE2, 0]
        } else {
            &[b'\'', b'\n', b'\r', 0xC2, 0xE2, 0]
        };
        while !self.eof() {
            self.skip_until(stops);
            if self.eof() {
                return;
            }
            let c = self.at(0).unwrap_or(0);
            if self.skip_break() {
                continue;
            }
            if quote == b'\'' && c == b'\'' {
                self.skip();
                if self.is(0, b'\'') {
                    self.skip();
                    continue;
                }
                return;
            }
            if quote == b'"' && c == b'\\' {
                self.skip();
                if !self.skip_break() && !self.eof() {
                    self.skip();
                }
                continue;
            }
            self.skip();
            if quote == b'"' && c == b'"' {
                return;
            }
        }
    }

    /// A literal or folded block scalar: its header line, then every line indented at least as
    /// far as the first non-empty one (or as the explicit indentation indicator says).
    fn block_scalar(&mut self) {
        self.skip();
        let mut increment = 0i64;
        for _ in 0..2 {
            match self.at(0) {
                Some(b'+' | b'-') => self.skip(),
                Some(d @ b'1'..=b'9') => {
                    increment = i64::from(d - b'0');
                    self.skip();
                }
                _ => {}
            }
        }
        // The rest of the header line is blanks and a comment, else libyaml stops.
        self.skip_line();
        let mut indent = if increment > 0 {
            if self.indent >= 0 {
                self.indent + increment
            } else {
                increment
            }
        } else {
            0
        };
        if !self.skip_break() {
            return;
        }
        self.block_breaks(&mut indent);
        while self.col as i64 == indent && !self.eof() {
            self.skip_line();
            if !self.skip_break() {
                return;
            }
            self.block_breaks(&mut indent);
        }
    }

    /// Leading empty lines of a block scalar; sets its indentation if not yet known.
    fn block_breaks(&mut self, indent: &mut i64) {
        let mut max_indent = 0i64;
        loop {
            while (*indent == 0 || (self.col as i64) < *indent) && self.is(0, b' ') {
                self.skip();
            }
            max_indent = max_indent.max(self.col as i64);
            if (*indent == 0 || (self.col as i64) < *indent) && self.is(0, b'\t') {
                // libyaml: "found a tab character where an indentation space is expected".
                break;
            }
            if !self.skip_break() {
                break;
            }
        }
        if *indent == 0 {
            *indent = max_indent.max(self.indent + 1).max(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_error(text: &str) -> Option<(usize, usize)> {
        match check(text) {
            Err(e) if e.message.contains("levels deep") => Some((e.line, e.column)),
            _ => None,
        }
    }

    #[test]
    fn deep_flow_is_refused_where_it_gets_too_deep() {
        let text = format!("a: {}", "[".repeat(100_000));
        // `a:` opens a block mapping: one level before the first bracket.
        assert_eq!(depth_error(&text), Some((1, 3 + MAX_DEPTH)));
        let text = format!("a:\n{}", "{\n".repeat(1000));
        assert_eq!(depth_error(&text), Some((1 + MAX_DEPTH, 1)));
        let ok = format!("a: {}1{}\n", "[".repeat(60), "]".repeat(60));
        assert_eq!(check(&ok), Ok(()));
    }

    #[test]
    fn deep_blocks_count_too() {
        let mut text = String::new();
        for i in 0..100 {
            text.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
        }
        assert!(depth_error(&text).is_some());
        let text = format!("a:\n  {}x\n", "- ".repeat(100));
        assert!(depth_error(&text).is_some());
    }

    #[test]
    fn brackets_inside_scalars_and_comments_do_not_count() {
        let inside = "[".repeat(100);
        for text in [
            format!("a: '{inside}'\n"),
            format!("a: \"{inside}\"\n"),
            format!("a: \"x\\\"{inside}\"\n"),
            format!("a: 'it''s {inside}'\n"),
            format!("a: b {inside}\n"),
            format!("a: b\n  {inside}\n"),
            format!("# {inside}\na: 1\n"),
            format!("a: 1 # {inside}\n"),
            format!("a: |\n  {inside}\n  more\nb: 2\n"),
            format!("- >-\n    {inside}\n"),
            format!("a: [\"{inside}\", '{inside}']\n"),
        ] {
            assert_eq!(check(&text), Ok(()), "{text}");
        }
    }

    #[test]
    fn brackets_after_a_scalar_ends_count() {
        let deep = "[".repeat(100);
        for text in [
            // The plain scalar ends at the less indented line.
            format!("a:\n  b: x\n c: {deep}\n"),
            // In flow context a bracket ends a plain scalar, quote or not.
            format!("a: [x \"{deep}\n"),
            format!("a: [x\n \"{deep}\n"),
            // The block scalar ends at the first less indented line.
            format!("a: |\n    text\n  b: {deep}\n"),
            format!("k: 'a''b' \nc: {deep}\n"),
        ] {
            assert!(depth_error(&text).is_some(), "{text}");
        }
    }

    #[test]
    fn token_count_is_bounded() {
        let text = format!("a: [{}]\n", "1,".repeat(MAX_TOKENS));
        let e = check(&text).unwrap_err();
        assert!(e.message.contains("tokens"), "{e}");
    }
}
