//! The `http` builtin: one request with ureq (blocking, on a thread of its own) within what
//! is left of the run's timeout, the head of the response body kept ([`OUTPUT_LIMIT`]), and
//! the status checked against `expectStatus`.

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use super::context::{TaskOutcome, OUTPUT_LIMIT};
use super::limits::{Interrupt, Limits};
use crate::spec::HttpMethod;

/// An `http` builtin's request, as the blocking thread sends it.
pub(super) struct HttpRequest {
    pub(super) url: String,
    pub(super) method: HttpMethod,
    pub(super) headers: BTreeMap<String, String>,
    pub(super) body: Option<String>,
    /// What is left of the run's timeout, for the whole exchange.
    pub(super) timeout: Option<Duration>,
}

struct HttpReply {
    status_line: String,
    status: u16,
    /// The first [`OUTPUT_LIMIT`] bytes of the body.
    body: Vec<u8>,
    truncated: bool,
}

enum HttpError {
    TimedOut,
    Other(String),
}

/// Sends `request` and checks its reply's status against `expect` (2xx when `None`).
pub(super) async fn run_http(
    request: HttpRequest,
    expect: Option<&[u16]>,
    limits: &Limits,
) -> TaskOutcome {
    if let Some(remaining) = request.timeout {
        if remaining.is_zero() {
            return limits.outcome(Interrupt::TimedOut, String::new());
        }
    }
    // ureq blocks. Its own timeout is the run's remaining time, so the thread ends by itself
    // after a timeout; on cancellation it is abandoned and ends with its request.
    let exchange = tokio::task::spawn_blocking(move || request.send());
    let reply = match limits.bounded(exchange).await {
        Err(interrupt) => return limits.outcome(interrupt, String::new()),
        Ok(Err(join_error)) => {
            return TaskOutcome::failed(
                format!("the HTTP request failed: {join_error}"),
                String::new(),
            )
        }
        Ok(Ok(Err(HttpError::TimedOut))) => {
            return limits.outcome(Interrupt::TimedOut, String::new())
        }
        Ok(Ok(Err(HttpError::Other(error)))) => return TaskOutcome::failed(error, String::new()),
        Ok(Ok(Ok(reply))) => reply,
    };
    let mut output = reply.status_line.clone();
    if !reply.body.is_empty() {
        output.push('\n');
        output.push_str(&String::from_utf8_lossy(&reply.body));
    }
    if reply.truncated {
        output.push_str(&format!("\n[body cut at {OUTPUT_LIMIT} bytes]"));
    }
    let expected = match expect {
        Some(list) => list.contains(&reply.status),
        None => (200..300).contains(&reply.status),
    };
    if expected {
        TaskOutcome::succeeded(output)
    } else {
        let wanted = match expect {
            Some(list) => {
                let codes: Vec<String> = list.iter().map(u16::to_string).collect();
                format!("expected {}", codes.join(", "))
            }
            None => "expected 2xx".to_string(),
        };
        TaskOutcome::failed(format!("{} ({wanted})", reply.status_line), output)
    }
}

impl HttpRequest {
    /// Sends the request and reads the head of the response body. Blocking.
    fn send(self) -> Result<HttpReply, HttpError> {
        use std::io::Read;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // Every status is a reply: `expectStatus` decides, not the client.
            .http_status_as_error(false)
            // A redirect is reported, not followed, so `expectStatus: [302]` means what it says.
            .max_redirects(0)
            .timeout_global(self.timeout)
            .user_agent(concat!("pgsched/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let method = match self.method {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Head => "HEAD",
        };
        let mut builder = ureq::http::Request::builder().method(method).uri(&self.url);
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        let invalid = |e: ureq::http::Error| HttpError::Other(format!("invalid HTTP request: {e}"));
        let sent = match self.body {
            Some(body) => agent.run(builder.body(body).map_err(invalid)?),
            // Without a body, POST, PUT and PATCH still say `Content-Length: 0`: some servers
            // refuse them otherwise.
            None if matches!(
                self.method,
                HttpMethod::Post | HttpMethod::Put | HttpMethod::Patch
            ) =>
            {
                agent.run(builder.body(String::new()).map_err(invalid)?)
            }
            None => agent.run(builder.body(()).map_err(invalid)?),
        };
        let response = sent.map_err(http_error)?;
        let status = response.status();
        let status_line = format!(
            "{:?} {} {}",
            response.version(),
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .trim_end()
        .to_string();
        let mut body = Vec::new();
        response
            .into_body()
            .into_reader()
            .take(OUTPUT_LIMIT as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| match e.kind() {
                io::ErrorKind::TimedOut => HttpError::TimedOut,
                _ => HttpError::Other(format!("cannot read the HTTP response: {e}")),
            })?;
        let truncated = body.len() > OUTPUT_LIMIT;
        body.truncate(OUTPUT_LIMIT);
        Ok(HttpReply {
            status_line,
            status: status.as_u16(),
            body,
            truncated,
        })
    }
}

fn http_error(e: ureq::Error) -> HttpError {
    match e {
        ureq::Error::Timeout(_) => HttpError::TimedOut,
        other => HttpError::Other(format!("HTTP request failed: {other}")),
    }
}
