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
}

/// Scans `sql` for statement count and `$n` use; never fails, even on unterminated quotes.
pub fn scan_sql(sql: &str) -> SqlShape {
    let b = sql.as_bytes();
    let mut i = 0;
    let mut shape = SqlShape::default();
    let mut current_has_content = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
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
                continue;
            }
            b'\'' | b'"' => {
                current_has_content = true;
                i += 1;
                while i < b.len() {
                    if b[i] == c {
                        if b.get(i + 1) == Some(&c) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
                continue;
            }
            b'$' => {
                current_has_content = true;
                // $n placeholder, or a dollar-quote tag $tag$ ... $tag$.
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
                if j > start && !is_ident_char(b.get(j).copied()) {
                    if let Ok(n) = sql[start..j].parse::<u32>() {
                        shape.max_param = shape.max_param.max(n);
                    }
                    i = j;
                    continue;
                }
                let mut k = start;
                while k < b.len() && (b[k].is_ascii_alphanumeric() || b[k] == b'_') {
                    k += 1;
                }
                if k < b.len() && b[k] == b'$' && (k == start || !b[start].is_ascii_digit()) {
                    let tag = &sql[i..=k];
                    match sql[k + 1..].find(tag) {
                        Some(end) => i = k + 1 + end + tag.len(),
                        None => i = b.len(),
                    }
                    continue;
                }
                i += 1;
                continue;
            }
            b';' => {
                if current_has_content {
                    shape.statements += 1;
                }
                current_has_content = false;
            }
            c if c.is_ascii_whitespace() => {}
            _ => current_has_content = true,
        }
        i += 1;
    }
    if current_has_content {
        shape.statements += 1;
    }
    shape
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
}
