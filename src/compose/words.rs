//! Splitting a `command:`/`entrypoint:` string into words the way a POSIX shell would, without
//! expanding anything (compose does the same; variables were already interpolated).

/// Splits on unquoted whitespace; single quotes are literal, double quotes allow `\"`, `\\`,
/// `\$` and `` \` ``; a backslash outside quotes escapes the next character. `""` is an empty word.
pub(crate) fn split(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed single quote in {text:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unclosed double quote in {text:?}")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed double quote in {text:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err(format!("trailing backslash in {text:?}")),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn words() {
        assert_eq!(
            split("nginx -g 'daemon off;'").unwrap(),
            ["nginx", "-g", "daemon off;"]
        );
        assert_eq!(
            split(r#"sh -c "echo \"hi\" \$HOME""#).unwrap(),
            ["sh", "-c", r#"echo "hi" $HOME"#]
        );
        assert_eq!(split("  a\tb\nc  ").unwrap(), ["a", "b", "c"]);
        assert_eq!(split(r"a\ b").unwrap(), ["a b"]);
        assert_eq!(split(r#"a "" b"#).unwrap(), ["a", "", "b"]);
        assert_eq!(split(r#""a\n""#).unwrap(), [r"a\n"]);
        assert!(split("").unwrap().is_empty());
    }

    #[test]
    fn unclosed() {
        assert!(split("echo 'hi").unwrap_err().contains("single quote"));
        assert!(split("echo \"hi").unwrap_err().contains("double quote"));
        assert!(split("echo \\").unwrap_err().contains("backslash"));
    }
}
