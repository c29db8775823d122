//! Python-compatible renderings of JSON values: `json.dumps` bytes and Celery's `saferepr`.
//!
//! Byte compatibility matters because what we publish sits in the same Redis lists as what
//! Python publishes; Flower, `celery inspect` and humans diffing `LRANGE` output see both.

use serde_json::{Map, Number, Value};

/// Celery's `argsrepr_maxsize` / `kwargsrepr_maxsize` (1024 characters).
pub const REPR_MAXSIZE: usize = 1024;

/// Containers nested deeper than this are shown as `[...]` / `{...}` (saferepr's `maxlevels`).
const REPR_MAXLEVELS: usize = 3;

/// `json.dumps(value)` with Python's defaults: `", "` / `": "` separators and `ensure_ascii`.
pub fn py_json(value: &Value) -> String {
    let mut out = String::new();
    write_json(&mut out, value);
    out
}

fn write_json(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&py_number(n)),
        Value::String(s) => write_json_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_json_object(out, map),
    }
}

fn write_json_object(out: &mut String, map: &Map<String, Value>) {
    out.push('{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_json_str(out, k);
        out.push_str(": ");
        write_json(out, v);
    }
    out.push('}');
}

/// A JSON string as Python's `ensure_ascii=True` encoder writes it: everything outside
/// printable ASCII becomes `\uXXXX` (UTF-16 surrogate pairs above the BMP).
fn write_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

/// A number as Python prints it (ints verbatim, floats with `float.__repr__`).
pub fn py_number(n: &Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() => py_float(f),
        _ => n.to_string(),
    }
}

/// `float.__repr__`: shortest round-trip digits, fixed notation for exponents in -4..16,
/// otherwise `d.ddde+XX` with at least two exponent digits.
pub fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Rust's `{:e}` already yields the shortest round-trip digits; only the layout differs.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exp) {
        format!("{sign}{}", fixed_notation(&digits, exp))
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{esign}{:02}", exp.abs())
    }
}

/// Place the decimal point in `digits` (d.ddd × 10^exp), always keeping one fractional digit.
fn fixed_notation(digits: &str, exp: i32) -> String {
    if exp < 0 {
        let zeros = "0".repeat((-exp - 1) as usize);
        return format!("0.{zeros}{digits}");
    }
    let int_len = exp as usize + 1;
    if digits.len() <= int_len {
        format!("{digits}{}.0", "0".repeat(int_len - digits.len()))
    } else {
        format!("{}.{}", &digits[..int_len], &digits[int_len..])
    }
}

/// Celery's `saferepr` of a JSON value (what `argsrepr`/`kwargsrepr` hold): `True`/`False`/
/// `None`, single-quoted strings where only `'` is escaped (saferepr does not re-escape
/// backslashes, newlines or non-ASCII), containers below three levels shown as `[...]`/`{...}`.
/// Output longer than [`REPR_MAXSIZE`] is cut there and ends in `...` (Celery's own cut point
/// differs slightly for huge values; nothing parses these strings).
pub fn py_repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(&mut out, value, 0);
    truncate_repr(out)
}

/// `argsrepr` of a positional argument list as `.delay(...)` writes it (a tuple).
pub fn py_tuple_repr(items: &[Value]) -> String {
    let mut out = String::from("(");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_repr(&mut out, item, 1);
    }
    if items.len() == 1 {
        out.push(',');
    }
    out.push(')');
    truncate_repr(out)
}

fn truncate_repr(out: String) -> String {
    match out.char_indices().nth(REPR_MAXSIZE) {
        Some((cut, _)) => format!("{}...", &out[..cut]),
        None => out,
    }
}

fn write_repr(out: &mut String, value: &Value, level: usize) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
        Value::Number(n) => out.push_str(&py_number(n)),
        Value::String(s) => {
            out.push('\'');
            out.push_str(&s.replace('\'', "\\'"));
            out.push('\'');
        }
        Value::Array(_) if level >= REPR_MAXLEVELS => out.push_str("[...]"),
        Value::Object(_) if level >= REPR_MAXLEVELS => out.push_str("{...}"),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, item, level + 1);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push('\'');
                out.push_str(&k.replace('\'', "\\'"));
                out.push_str("': ");
                write_repr(out, v, level + 1);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_match_python_repr() {
        let cases = [
            (1e16, "1e+16"),
            (1e-5, "1e-05"),
            (0.1, "0.1"),
            (100.0, "100.0"),
            (-0.0, "-0.0"),
            (1.5, "1.5"),
            (0.0001, "0.0001"),
            (123456789012345.6, "123456789012345.6"),
            (1.25e-7, "1.25e-07"),
            (2.5e300, "2.5e+300"),
        ];
        for (f, want) in cases {
            assert_eq!(py_float(f), want, "{f}");
        }
    }

    #[test]
    fn json_uses_python_separators_and_ascii_escapes() {
        let v = json!(["é\u{1F600}\n\"\\\u{7f}", {"a": 1, "b": [true, null, 2.0]}]);
        assert_eq!(
            py_json(&v),
            r#"["\u00e9\ud83d\ude00\n\"\\\u007f", {"a": 1, "b": [true, null, 2.0]}]"#
        );
    }

    #[test]
    fn repr_matches_celery_saferepr() {
        // Expected strings captured from celery 5.4.0 `saferepr(value, 1024)`.
        let v = json!(["a'b", "a\"b", "a\\b", "a\nb", "é"]);
        assert_eq!(py_repr(&v), "['a\\'b', 'a\"b', 'a\\b', 'a\nb', 'é']");
        let v = json!({"x": true, "y": null, "z": 1.5});
        assert_eq!(py_repr(&v), "{'x': True, 'y': None, 'z': 1.5}");
        assert_eq!(py_repr(&json!([[[[1]]]])), "[[[[...]]]]");
        assert_eq!(
            py_repr(&json!([{"a": {"b": {"c": 1}}}])),
            "[{'a': {'b': {...}}}]"
        );
        assert_eq!(py_tuple_repr(&[json!("a")]), "('a',)");
        assert_eq!(py_tuple_repr(&[json!("a"), json!([1, 2])]), "('a', [1, 2])");
    }

    #[test]
    fn long_repr_is_cut() {
        let r = py_repr(&json!("x".repeat(3000)));
        assert_eq!(r.chars().count(), REPR_MAXSIZE + 3);
        assert!(r.ends_with("..."));
    }
}
