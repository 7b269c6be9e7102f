//! `pgsched trigger --params-file`: the file of parameter sets, one JSON object per line, read
//! and checked whole before anything is enqueued, so a file with a bad line enqueues nothing
//! and the message names every bad line (`file:line:column`) with what is wrong with it.

use std::io::BufRead;
use std::path::Path;

/// How `-` (standard input) is named in messages.
const STDIN_NAME: &str = "<stdin>";

/// At most this many bad lines are printed: a wrong file (a CSV, a whole JSON array) would
/// otherwise print every one of its lines.
const BAD_LINES_SHOWN: usize = 20;

/// One line that is not a parameter set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based, counting blank lines too, as an editor does.
    pub line: usize,
    /// 1-based column where JSON parsing stopped; none when the line is JSON but not an object.
    pub column: Option<usize>,
    /// What is wrong, e.g. `not JSON: expected value`.
    pub message: String,
}

/// The parameter sets of `path` (`-` is standard input), in order, or every line that is not
/// one. An error only when the file cannot be read.
pub fn read(path: &Path) -> anyhow::Result<Result<Vec<serde_json::Value>, Vec<BadLine>>> {
    let read = if path == Path::new("-") {
        parse(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open --params-file {}: {e}", path.display()))?;
        parse(std::io::BufReader::new(file))
    };
    read.map_err(|e| anyhow::anyhow!("reading --params-file {}: {e}", display_name(path)))
}

/// The parameter sets of `reader`: one JSON object per line, blank lines skipped.
pub fn parse(
    mut reader: impl BufRead,
) -> std::io::Result<Result<Vec<serde_json::Value>, Vec<BadLine>>> {
    let mut sets = Vec::new();
    let mut bad = Vec::new();
    let mut buffer = Vec::new();
    let mut line = 0;
    loop {
        buffer.clear();
        if reader.read_until(b'\n', &mut buffer)? == 0 {
            break;
        }
        line += 1;
        // Bytes, not a String: a line that is not UTF-8 is reported by serde_json with its
        // column, like any other bad line, instead of ending the read.
        let text = buffer.trim_ascii_end();
        if text.trim_ascii_start().is_empty() {
            continue;
        }
        match parse_line(text) {
            Ok(set) => sets.push(set),
            Err((column, message)) => bad.push(BadLine {
                line,
                column,
                message,
            }),
        }
    }
    Ok(if bad.is_empty() { Ok(sets) } else { Err(bad) })
}

/// One line's parameter set, or where and why it is not one.
fn parse_line(text: &[u8]) -> Result<serde_json::Value, (Option<usize>, String)> {
    match serde_json::from_slice::<serde_json::Value>(text) {
        Ok(set) if set.is_object() => Ok(set),
        Ok(other) => Err((
            None,
            format!(
                "a parameter set must be a JSON object, got {} (one object per line, e.g. {{\"user_id\": 42}})",
                json_type(&other)
            ),
        )),
        Err(e) => {
            // serde_json ends its message with the position, which the caller prints first.
            let full = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let message = full.strip_suffix(&suffix).unwrap_or(&full);
            Err((Some(e.column()), format!("not JSON: {message}")))
        }
    }
}

/// The JSON type of a value, with its article, as messages say it.
fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// `path` as messages name it: `<stdin>` for `-`.
pub fn display_name(path: &Path) -> String {
    if path == Path::new("-") {
        STDIN_NAME.to_string()
    } else {
        path.display().to_string()
    }
}

/// Prints the bad lines of `path` to stderr as `file:line:column: message`, the first
/// [`BAD_LINES_SHOWN`] of them, then how many there were and that nothing was enqueued.
pub fn print_bad_lines(path: &Path, bad: &[BadLine]) {
    let name = display_name(path);
    for b in bad.iter().take(BAD_LINES_SHOWN) {
        match b.column {
            Some(column) => eprintln!("{name}:{}:{column}: {}", b.line, b.message),
            None => eprintln!("{name}:{}: {}", b.line, b.message),
        }
    }
    if bad.len() > BAD_LINES_SHOWN {
        eprintln!("… and {} more", bad.len() - BAD_LINES_SHOWN);
    }
    let lines = if bad.len() == 1 { "line" } else { "lines" };
    eprintln!("{} bad {lines} in {name}: nothing was enqueued", bad.len());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(text: &str) -> Result<Vec<serde_json::Value>, Vec<BadLine>> {
        parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn one_object_per_line_in_order_blank_lines_skipped() {
        let sets = parsed("{\"n\": 1}\n\n   \n{\"n\": 2, \"x\": [1]}\r\n\t{}\n{\"n\": 3}").unwrap();
        assert_eq!(
            sets,
            vec![
                json!({"n": 1}),
                json!({"n": 2, "x": [1]}),
                json!({}),
                json!({"n": 3})
            ]
        );
        assert_eq!(parsed(""), Ok(vec![]));
        assert_eq!(parsed("\n\n"), Ok(vec![]));
    }

    #[test]
    fn every_bad_line_is_reported_with_its_line_and_what_is_wrong() {
        let bad = parsed(
            "{\"n\": 1}\n\n{\"n\": 2,}\n[1, 2]\n\"text\"\n{\"a\": 1} {\"b\": 2}\n{\"n\": 5}\n",
        )
        .unwrap_err();
        let lines: Vec<(usize, Option<usize>)> = bad.iter().map(|b| (b.line, b.column)).collect();
        assert_eq!(
            lines,
            vec![(3, Some(9)), (4, None), (5, None), (6, Some(10))]
        );
        assert!(bad[0].message.starts_with("not JSON: "), "{:?}", bad[0]);
        assert!(!bad[0].message.contains("at line"), "{:?}", bad[0]);
        assert!(bad[1].message.contains("got an array"), "{:?}", bad[1]);
        assert!(bad[2].message.contains("got a string"), "{:?}", bad[2]);
        assert!(
            bad[3].message.contains("trailing characters"),
            "{:?}",
            bad[3]
        );
    }

    #[test]
    fn a_line_that_is_not_utf8_is_a_bad_line_not_a_read_error() {
        let bad = parse(&b"{\"n\": 1}\n{\"n\": \"\xff\"}\n{}\n"[..])
            .unwrap()
            .unwrap_err();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 2);
        assert!(bad[0].message.starts_with("not JSON"), "{:?}", bad[0]);
    }

    #[test]
    fn standard_input_is_named_in_messages() {
        assert_eq!(display_name(Path::new("-")), "<stdin>");
        assert_eq!(display_name(Path::new("runs.jsonl")), "runs.jsonl");
    }
}
