//! A small lexical scan of SQL text: enough to tell whether a statement uses `$1` and how many
//! statements a body holds, skipping quoted strings, quoted identifiers, dollar-quoted bodies
//! and comments. It is not a parser; PostgreSQL itself checks the SQL at plan time.

/// What the scan found in a SQL body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqlShape {
    /// Non-empty statements separated by top-level `;`.
    pub statements: usize,
    /// The highest `$n` placeholder used outside quotes and comments (0 when none).
    pub max_param: u32,
    /// Whether a statement controls the transaction itself (`BEGIN`, `START`, `COMMIT`,
    /// `END`, `ROLLBACK`, `ABORT`): such SQL cannot run inside the transaction that records
    /// its run.
    pub own_transaction: bool,
}

/// The first keywords of statements that begin or end a transaction.
const TRANSACTION_CONTROL: &[&str] = &["BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT"];

/// Scans `sql` for statement count and `$n` use; never fails, even on unterminated quotes.
pub fn scan_sql(sql: &str) -> SqlShape {
    let b = sql.as_bytes();
    let mut i = 0;
    let mut shape = SqlShape::default();
    let mut current_has_content = false;
    while i < b.len() {
        i = match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => line_comment_end(b, i),
            b'/' if b.get(i + 1) == Some(&b'*') => block_comment_end(b, i),
            quote @ (b'\'' | b'"') => {
                current_has_content = true;
                quoted_end(b, i, quote)
            }
            b'$' => {
                current_has_content = true;
                dollar_end(sql, i, &mut shape.max_param)
            }
            b';' => {
                if current_has_content {
                    shape.statements += 1;
                }
                current_has_content = false;
                i + 1
            }
            c if c.is_ascii_whitespace() => i + 1,
            c if !current_has_content && c.is_ascii_alphabetic() => {
                current_has_content = true;
                let end = b[i..]
                    .iter()
                    .position(|c| !c.is_ascii_alphabetic())
                    .map_or(b.len(), |n| i + n);
                let word = sql[i..end].to_ascii_uppercase();
                shape.own_transaction |= TRANSACTION_CONTROL.contains(&word.as_str());
                end
            }
            _ => {
                current_has_content = true;
                i + 1
            }
        };
    }
    if current_has_content {
        shape.statements += 1;
    }
    shape
}

/// Where a `--` comment starting at `i` ends: at its newline (or the end of the text).
fn line_comment_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] != b'\n' {
        i += 1;
    }
    i
}

/// Just past the `*/` that closes the `/*` at `i`.
fn block_comment_end(b: &[u8], mut i: usize) -> usize {
    // Block comments nest in PostgreSQL.
    let mut depth = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                break;
            }
        } else {
            i += 1;
        }
    }
    i
}

/// Just past the `quote` that closes the string or identifier opened at `i`; a doubled quote
/// is part of the text.
fn quoted_end(b: &[u8], mut i: usize, quote: u8) -> usize {
    i += 1;
    while i < b.len() {
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            break;
        }
        i += 1;
    }
    i + 1
}

/// Just past what the `$` at `i` starts: a `$n` placeholder (which raises `max_param`), a
/// dollar-quoted body `$tag$ ... $tag$`, or neither (then only the `$`).
fn dollar_end(sql: &str, i: usize, max_param: &mut u32) -> usize {
    let b = sql.as_bytes();
    let start = i + 1;
    let mut j = start;
    while j < b.len() && b[j].is_ascii_digit() {
        j += 1;
    }
    if j > start && !is_ident_char(b.get(j).copied()) {
        if let Ok(n) = sql[start..j].parse::<u32>() {
            *max_param = (*max_param).max(n);
        }
        return j;
    }
    let mut k = start;
    while k < b.len() && (b[k].is_ascii_alphanumeric() || b[k] == b'_') {
        k += 1;
    }
    if k < b.len() && b[k] == b'$' && (k == start || !b[start].is_ascii_digit()) {
        let tag = &sql[i..=k];
        return match sql[k + 1..].find(tag) {
            Some(end) => k + 1 + end + tag.len(),
            None => b.len(),
        };
    }
    i + 1
}

fn is_ident_char(c: Option<u8>) -> bool {
    matches!(c, Some(c) if c.is_ascii_alphanumeric() || c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_statements_and_params() {
        let cases: &[(&str, usize, u32)] = &[
            ("SELECT 1", 1, 0),
            ("SELECT 1;", 1, 0),
            ("SELECT 1; SELECT 2;", 2, 0),
            ("  ;; ", 0, 0),
            ("SELECT ';' , \"a;b\"", 1, 0),
            ("SELECT $1::jsonb", 1, 1),
            ("SELECT $1->>'id', $2", 1, 2),
            ("SELECT '$1'", 1, 0),
            ("-- $1 ;\nSELECT 1", 1, 0),
            ("/* ; /* nested ; */ $3 */ SELECT 1", 1, 0),
            ("DO $$ BEGIN PERFORM 1; END $$; SELECT 2", 2, 0),
            ("DO $body$ SELECT $1; $body$", 1, 0),
            ("SELECT 'it''s;'", 1, 0),
            ("SELECT $1a", 1, 0),
        ];
        for (sql, statements, max_param) in cases {
            let shape = scan_sql(sql);
            assert_eq!(shape.statements, *statements, "{sql}");
            assert_eq!(shape.max_param, *max_param, "{sql}");
        }
    }

    #[test]
    fn tells_sql_that_controls_its_own_transaction() {
        let cases: &[(&str, bool)] = &[
            ("UPDATE t SET a = 1", false),
            ("BEGIN; UPDATE t SET a = 1; COMMIT", true),
            ("update t set a = 1; commit;", true),
            ("START TRANSACTION; SELECT 1", true),
            ("SELECT 1; ROLLBACK", true),
            ("-- COMMIT\nSELECT 'COMMIT'", false),
            ("DO $$ BEGIN PERFORM 1; END $$", false),
            ("SELECT begin_at FROM t", false),
            ("/* x */ end", true),
            ("VACUUM t", false),
        ];
        for (sql, own) in cases {
            assert_eq!(scan_sql(sql).own_transaction, *own, "{sql}");
        }
    }
}
