//! `files_encoding.commands`: Python's `str()` of MediaCMS's list of argv lists.

/// Renders `passes` as Python would print `[[...], ...]`.
///
/// MediaCMS builds argv with a few ints in it: the pass number after `-pass` and VP9's `-speed`
/// value. Those appear bare (`-pass', 1`), every other token as a Python string literal.
pub fn commands_repr(passes: &[Vec<String>]) -> String {
    let lists: Vec<String> = passes.iter().map(|argv| list_repr(argv)).collect();
    format!("[{}]", lists.join(", "))
}

fn list_repr(argv: &[String]) -> String {
    let items: Vec<String> = argv
        .iter()
        .enumerate()
        .map(|(i, tok)| {
            let prev = i.checked_sub(1).map(|j| argv[j].as_str());
            if is_int_slot(prev, tok) {
                tok.clone()
            } else {
                py_str_repr(tok)
            }
        })
        .collect();
    format!("[{}]", items.join(", "))
}

fn is_int_slot(prev: Option<&str>, tok: &str) -> bool {
    matches!(prev, Some("-pass" | "-speed"))
        && !tok.is_empty()
        && tok.bytes().all(|b| b.is_ascii_digit())
}

/// Python 3 `repr(str)`: single quotes unless the text has `'` and no `"`; backslash, the quote,
/// `\n` `\r` `\t` escaped; other control characters as `\xNN`. Printable non-ASCII stays as is
/// (Python's `isprintable` is approximated by "not a control character").
pub fn py_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_string_repr_rules() {
        assert_eq!(py_str_repr("abc"), "'abc'");
        assert_eq!(py_str_repr(r"a\,b"), r"'a\\,b'");
        assert_eq!(py_str_repr("it's"), "\"it's\"");
        assert_eq!(py_str_repr("both ' and \""), "'both \\' and \"'");
        assert_eq!(py_str_repr("x\ny\t\u{1}"), "'x\\ny\\t\\x01'");
        assert_eq!(py_str_repr("café"), "'café'");
        assert_eq!(py_str_repr(""), "''");
    }

    #[test]
    fn pass_and_speed_values_are_bare_ints() {
        let argv: Vec<String> = ["ffmpeg", "-speed", "4", "-pass", "1", "-crf", "32", "-pass"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            commands_repr(&[argv.clone(), argv[..2].to_vec()]),
            "[['ffmpeg', '-speed', 4, '-pass', 1, '-crf', '32', '-pass'], ['ffmpeg', '-speed']]"
        );
        assert_eq!(commands_repr(&[]), "[]");
    }
}
