//! Semantic checks: everything the types alone cannot say (exactly one task, `runAt` xor
//! `schedule`, valid cron and zones, references between objects, unique names...). Every
//! problem is collected, not only the first, each located through the document's span tree.

use super::document::{check_name, Object};
use super::error::{did_you_mean, SpecError};
use super::model::{
    Builtin, ChainSpec, ConcurrencyPolicy, ConnectionSpec, HasTask, JobSpec, Kind, ObjectSpec,
    Retries, Scheduling, Step, TimeoutSpec,
};
use super::sql::scan_sql;
use super::yaml::{FieldPath, Node};
use crate::duration::SpecDuration;
use crate::schedule::ScheduleError;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An object with the document it came from, for locating errors.
pub struct Located<'a> {
    /// The object to check.
    pub object: &'a Object,
    /// The YAML document it was read from; errors are located through it.
    pub doc: &'a Node,
    /// The file name used in messages (the spec directory joined with the relative path).
    pub shown: &'a Path,
}

/// Largest `batchSize` a Timeout may ask for: one statement should not hold locks for long.
pub const MAX_BATCH_SIZE: u32 = 100_000;

/// Checks each object on its own and all of them together.
pub fn validate_all(items: &[Located<'_>]) -> Vec<SpecError> {
    let connections = connection_names(items.iter().map(|i| i.object));
    let mut errors = validate_each(items, &connections);
    errors.extend(validate_together(items));
    errors
}

/// The names of the Connections among these objects: what `database:` may refer to.
pub fn connection_names<'a>(objects: impl Iterator<Item = &'a Object>) -> Vec<&'a str> {
    objects
        .filter(|o| o.kind == Kind::Connection)
        .map(|o| o.name())
        .collect()
}

/// The checks of each object on its own, given the Connections it may refer to. Their result
/// depends on nothing else, so the sidecar keeps it for files that did not change.
pub fn validate_each(items: &[Located<'_>], connections: &[&str]) -> Vec<SpecError> {
    // Objects are checked independently of each other, so large directories are checked on
    // every core; the order of the errors does not depend on the split.
    let per_chunk = super::load::parallel_chunks(items, |chunk| {
        let mut errors = Vec::new();
        for item in chunk {
            let mut check = Checker {
                item,
                errors: &mut errors,
                connections,
            };
            check.object();
        }
        errors
    });
    per_chunk.into_iter().flatten().collect()
}

/// The checks across objects: unique names.
pub fn validate_together(items: &[Located<'_>]) -> Vec<SpecError> {
    let mut errors = Vec::new();
    unique_names(items, &mut errors);
    errors
}

/// Names are unique per kind. Jobs and chains share one namespace on top of that, because
/// `pgsched.trigger(name)` and `pgsched runs NAME` take a bare name.
/// The namespace a name must be unique in.
pub fn name_namespace(kind: Kind) -> &'static str {
    match kind {
        Kind::Job | Kind::Chain => "job-or-chain",
        other => other.as_str(),
    }
}

fn unique_names(items: &[Located<'_>], errors: &mut Vec<SpecError>) {
    let mut seen: HashMap<(&str, &str), &Located<'_>> = HashMap::new();
    for item in items {
        let namespace = name_namespace(item.object.kind);
        let name = item.object.name();
        match seen.get(&(namespace, name)) {
            Some(first) => {
                let path = FieldPath::parse("metadata.name");
                errors.push(
                    SpecError::new(
                        item.shown,
                        format!(
                            "duplicate name `{name}`: {} `{name}` is already defined",
                            first.object.kind
                        ),
                    )
                    .at(item.doc.locate(&path))
                    .field(path)
                    .hint(format!(
                        "first defined in {}:{}; names are unique per kind, and jobs and chains share theirs",
                        first.shown.display(),
                        first.object.source.line
                    )),
                );
            }
            None => {
                seen.insert((namespace, name), item);
            }
        }
    }
}

struct Checker<'a, 'b> {
    item: &'a Located<'a>,
    errors: &'b mut Vec<SpecError>,
    connections: &'b [&'a str],
}

impl Checker<'_, '_> {
    fn error(&mut self, path: &str, message: impl Into<String>) -> &mut SpecError {
        self.error_at(FieldPath::parse(path), message)
    }

    /// As [`Self::error`], for paths with user-written keys (which may hold `.` or `[`).
    fn error_at(&mut self, path: FieldPath, message: impl Into<String>) -> &mut SpecError {
        let error = SpecError::new(self.item.shown, message)
            .at(self.item.doc.locate(&path))
            .field(path);
        self.errors.push(error);
        self.errors.last_mut().expect("just pushed")
    }

    fn error_hint(&mut self, path: &str, message: impl Into<String>, hint: Option<String>) {
        let e = self.error(path, message);
        e.hint = hint;
    }

    fn object(&mut self) {
        let object = self.item.object;
        for key in object.metadata.labels.keys() {
            if key.trim().is_empty() {
                self.error("metadata.labels", "label keys must not be empty");
            }
        }
        match &object.spec {
            ObjectSpec::Job(job) => self.job(job),
            ObjectSpec::Chain(chain) => self.chain(chain),
            ObjectSpec::Timeout(timeout) => self.timeout(timeout),
            ObjectSpec::Connection(connection) => self.connection(connection),
        }
    }

    fn name(&mut self, path: &str, name: &str) {
        if let Some((message, hint)) = check_name(name) {
            self.error_hint(path, message, Some(hint));
        }
    }

    fn job(&mut self, job: &JobSpec) {
        self.scheduling("spec", &job.scheduling());
        self.task("spec", job);
        if let Some(db) = &job.database {
            self.database_ref("spec.database", db);
            self.database_applies("spec", job);
        }
    }

    /// `database` says where SQL runs: a task that runs none would silently ignore it.
    fn database_applies(&mut self, base: &str, t: &dyn HasTask) {
        let set = t.task_fields_set();
        let uses_database =
            t.sql().is_some() || matches!(t.builtin(), Some(Builtin::Notify { .. }));
        if set.len() == 1 && !uses_database {
            self.error_hint(
                &format!("{base}.database"),
                format!(
                    "`database` applies only to `sql` tasks and the `notify` builtin, not to `{}`",
                    set[0]
                ),
                Some("remove `database`".into()),
            );
        }
    }

    fn chain(&mut self, chain: &ChainSpec) {
        self.scheduling("spec", &chain.scheduling());
        if chain.steps.is_empty() {
            self.error("spec.steps", "a chain needs at least one step");
        }
        // Step names are unique across `steps` and `onFailure`: both are recorded in the same
        // run, and an `onFailure` step is told which step failed by name.
        let lists: [(&str, &[Step], &str); 2] = [
            ("spec.steps", &chain.steps, "step"),
            ("spec.onFailure", chain.on_failure_steps(), "on-failure"),
        ];
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for (list, steps, _) in lists {
            for (i, step) in steps.iter().enumerate() {
                let base = format!("{list}[{i}]");
                if let Some(name) = &step.name {
                    self.name(&format!("{base}.name"), name);
                    if let Some(first) = names.get(name) {
                        let first = first.clone();
                        self.error_hint(
                            &format!("{base}.name"),
                            format!("duplicate step name `{name}`"),
                            Some(format!(
                                "{} is already named `{name}`; step names are unique in a chain, `onFailure` steps included",
                                describe_step(&first)
                            )),
                        );
                    } else {
                        names.insert(name.clone(), base.clone());
                    }
                }
                self.step(&base, step);
            }
        }
        // An unnamed step is recorded as `step-<n>` (`on-failure-<n>`): an explicit name must
        // not take that.
        for (list, steps, prefix) in lists {
            for (j, step) in steps.iter().enumerate() {
                let default = format!("{prefix}-{}", j + 1);
                if step.name.is_some() {
                    continue;
                }
                if let Some(at) = names.get(&default).cloned() {
                    let which = describe_step(&format!("{list}[{j}]"));
                    self.error_hint(
                        &format!("{at}.name"),
                        format!("step name `{default}` is the name {which} gets by default"),
                        Some(format!(
                            "{which} has no name and is recorded as `{default}`; rename one of them"
                        )),
                    );
                }
            }
        }
        for (i, step) in chain.on_failure_steps().iter().enumerate() {
            if step.needs.is_some() {
                self.error_hint(
                    &format!("spec.onFailure[{i}].needs"),
                    "`needs` cannot be used on `onFailure` steps",
                    Some("`onFailure` steps run one after another, in the order written; remove `needs`".into()),
                );
            }
        }
        self.needs(chain);
        if chain.transaction == Some(true) {
            let sql_databases: Vec<(usize, Option<&str>)> = chain
                .steps
                .iter()
                .enumerate()
                .filter(|(_, s)| s.sql.is_some())
                .map(|(i, s)| (i, s.database.as_deref()))
                .collect();
            if let Some((_, first_db)) = sql_databases.first().copied() {
                for (i, db) in sql_databases.iter().skip(1) {
                    if *db != first_db {
                        self.error_hint(
                            &format!("spec.steps[{i}].database"),
                            "every SQL step of a transactional chain must use the same database",
                            Some(format!(
                                "the first SQL step uses {}; drop `transaction: true` or use one database",
                                first_db.map(|d| format!("`{d}`")).unwrap_or_else(|| "the scheduler's database".into())
                            )),
                        );
                    }
                }
            }
        }
    }

    /// One step of `steps` or `onFailure`: its task and its own fields.
    fn step(&mut self, base: &str, step: &Step) {
        self.task(base, step);
        if let Some(db) = &step.database {
            self.database_ref(&format!("{base}.database"), db);
            self.database_applies(base, step);
        }
        self.positive(&format!("{base}.timeout"), step.timeout);
        if let Some(retries) = &step.retries {
            self.retries(&format!("{base}.retries"), retries);
        }
    }

    /// `needs`: known step names, no step needing itself, no cycle, not with a transaction.
    fn needs(&mut self, chain: &ChainSpec) {
        let names = chain.step_names();
        let index: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let handlers = chain.on_failure_names();
        let transactional = chain.transaction == Some(true);
        // Edges of the graph that are well-formed, for the cycle check.
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); chain.steps.len()];
        for (i, step) in chain.steps.iter().enumerate() {
            let Some(needs) = &step.needs else { continue };
            if transactional {
                self.error_hint(
                    &format!("spec.steps[{i}].needs"),
                    "`needs` cannot be used with `transaction: true`",
                    Some("a transaction runs its SQL steps one after another on one connection; remove `needs` or `transaction: true`".into()),
                );
            }
            for (k, need) in needs.iter().enumerate() {
                let path = format!("spec.steps[{i}].needs[{k}]");
                if need == &names[i] {
                    self.error_hint(
                        &path,
                        format!("step `{need}` needs itself"),
                        Some("a step cannot wait for itself; remove it from `needs`".into()),
                    );
                    continue;
                }
                if needs[..k].contains(need) {
                    self.error(&path, format!("`{need}` is listed twice in `needs`"));
                    continue;
                }
                match index.get(need.as_str()) {
                    Some(&j) => edges[i].push(j),
                    None if handlers.contains(need) => self.error_hint(
                        &path,
                        format!("`{need}` is an `onFailure` step"),
                        Some("`needs` names steps of `steps`; `onFailure` steps run only when the chain fails".into()),
                    ),
                    None => {
                        let hint = did_you_mean(need, names.iter().map(String::as_str))
                            .or_else(|| Some(format!("the steps are {}", quoted_list(&names))));
                        self.error_hint(&path, format!("no step named `{need}`"), hint);
                    }
                }
            }
        }
        for cycle in find_cycles(&edges) {
            // Reported once, at the step of the cycle written first.
            let first = *cycle.iter().min().expect("a cycle has steps");
            let start = cycle
                .iter()
                .position(|&s| s == first)
                .expect("in the cycle");
            let mut order: Vec<usize> = cycle[start..].to_vec();
            order.extend_from_slice(&cycle[..start]);
            let next = order.get(1).copied().unwrap_or(first);
            let k = chain.steps[first]
                .needs
                .as_ref()
                .and_then(|n| n.iter().position(|x| x == &names[next]))
                .unwrap_or(0);
            let mut shown: Vec<String> = order.iter().map(|&s| format!("`{}`", names[s])).collect();
            shown.push(format!("`{}`", names[first]));
            self.error_hint(
                &format!("spec.steps[{first}].needs[{k}]"),
                format!("steps needing each other form a cycle: {}", shown.join(" needs ")),
                Some("a step can only need steps that do not (even indirectly) need it; remove one of these needs".into()),
            );
        }
    }

    fn scheduling(&mut self, base: &str, s: &Scheduling<'_>) {
        if let (Some(_), Some(_)) = (s.schedule, s.run_at) {
            self.error_hint(
                &format!("{base}.runAt"),
                "`runAt` and `schedule` are exclusive",
                Some("use `schedule` for a repeating job, `runAt` for a single run".into()),
            );
        }
        if let Some(schedule) = s.schedule {
            if let Err(e) = crate::schedule::parse_schedule(schedule) {
                let (message, hint) = split_suggestion(e);
                self.error_hint(&format!("{base}.schedule"), message, hint);
            }
        }
        if let Some(zone) = s.time_zone {
            if let Err(e) = crate::schedule::parse_time_zone(zone) {
                let (message, hint) = split_suggestion(e);
                self.error_hint(&format!("{base}.timeZone"), message, hint);
            }
        }
        self.positive(&format!("{base}.timeout"), s.timeout);
        self.positive(&format!("{base}.startingDeadline"), s.starting_deadline);
        if let Some(retries) = s.retries {
            self.retries(&format!("{base}.retries"), retries);
        }
        if let Some(max) = s.max_instances {
            if max == 0 {
                self.error(
                    &format!("{base}.maxInstances"),
                    "maxInstances must be at least 1",
                );
            } else if s.concurrency_policy != ConcurrencyPolicy::Allow {
                self.error_hint(
                    &format!("{base}.maxInstances"),
                    "maxInstances applies only with `concurrencyPolicy: Allow`",
                    Some(format!(
                        "the policy is {:?}, which runs at most one instance; set `concurrencyPolicy: Allow` or remove maxInstances",
                        s.concurrency_policy
                    )),
                );
            }
        }
        if let Some(history) = s.history {
            self.positive(&format!("{base}.history.keepFor"), history.keep_for);
        }
    }

    fn retries(&mut self, base: &str, retries: &Retries) {
        let Some(backoff) = &retries.backoff else {
            return;
        };
        self.positive(&format!("{base}.backoff.initial"), backoff.initial);
        self.positive(&format!("{base}.backoff.max"), backoff.max);
        if let Some(factor) = backoff.factor {
            if !factor.is_finite() || factor < 1.0 {
                self.error(
                    &format!("{base}.backoff.factor"),
                    format!("factor {factor} must be a number of at least 1"),
                );
            }
        }
        if let (Some(initial), Some(max)) = (backoff.initial, backoff.max) {
            if initial > max {
                self.error(
                    &format!("{base}.backoff.max"),
                    format!("max {max} is shorter than initial {initial}"),
                );
            }
        }
    }

    fn positive(&mut self, path: &str, value: Option<SpecDuration>) {
        if value.is_some_and(|d| d.0 == Duration::ZERO) {
            self.error(path, "must be longer than 0s");
        }
    }

    fn database_ref(&mut self, path: &str, name: &str) {
        if !self.connections.contains(&name) {
            let hint = did_you_mean(name, self.connections.iter().copied()).or_else(|| {
                Some("define it with `kind: Connection`, or remove `database` to use the scheduler's database".into())
            });
            self.error_hint(path, format!("no Connection named `{name}`"), hint);
        }
    }

    fn task(&mut self, base: &str, t: &dyn HasTask) {
        let set = t.task_fields_set();
        match set.len() {
            0 => {
                self.error_hint(
                    base,
                    "no task",
                    Some("set exactly one of `sql`, `command`, `shell` or `builtin`".into()),
                );
                return;
            }
            1 => {}
            _ => {
                self.error_hint(
                    &format!("{base}.{}", set[1]),
                    format!("`{}` and `{}` are both set", set[0], set[1]),
                    Some("a task has exactly one of `sql`, `command`, `shell` or `builtin`".into()),
                );
                return;
            }
        }
        if t.command().is_none() && t.shell().is_none() {
            if !t.env().is_empty() {
                self.error(
                    &format!("{base}.env"),
                    "`env` applies only to `command` and `shell` tasks",
                );
            }
            if t.working_dir().is_some() {
                self.error(
                    &format!("{base}.workingDir"),
                    "`workingDir` applies only to `command` and `shell` tasks",
                );
            }
        }
        for key in t.env().keys() {
            let valid = !key.is_empty()
                && !key.as_bytes()[0].is_ascii_digit()
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if valid && key.starts_with("PGSCHED_") {
                let path = FieldPath::parse(base).key("env").key(key.clone());
                self.error_at(
                    path,
                    format!("`{key}` is set by pgsched for every run (PGSCHED_PARAMS, PGSCHED_JOB, PGSCHED_RUN_ID, PGSCHED_ATTEMPT)"),
                )
                .hint = Some("choose a name that does not start with PGSCHED_".into());
            }
            if !valid {
                let path = FieldPath::parse(base).key("env").key(key.clone());
                self.error_at(
                    path,
                    format!("`{key}` is not a valid environment variable name (letters, digits and _, not starting with a digit)"),
                );
            }
        }
        if let Some(sql) = t.sql() {
            let shape = scan_sql(sql);
            if shape.statements == 0 {
                self.error(&format!("{base}.sql"), "the SQL is empty");
            } else if shape.max_param > 1 {
                self.error_hint(
                    &format!("{base}.sql"),
                    format!(
                        "the SQL uses ${}, but only $1 (the run's parameters as jsonb) is bound",
                        shape.max_param
                    ),
                    Some("read values from $1, e.g. ($1->>'user_id')::bigint".into()),
                );
            } else if shape.max_param == 1 && shape.statements > 1 {
                self.error_hint(
                    &format!("{base}.sql"),
                    format!("the SQL uses $1 but holds {} statements", shape.statements),
                    Some("a statement with parameters must be a single statement; split it into chain steps".into()),
                );
            }
        }
        if let Some(argv) = t.command() {
            if argv.first().is_none_or(|p| p.trim().is_empty()) {
                self.error_hint(
                    &format!("{base}.command"),
                    "the command is empty",
                    Some(
                        "write the program and its arguments, e.g. [pg_dump, --format=custom, app]"
                            .into(),
                    ),
                );
            }
        }
        if let Some(script) = t.shell() {
            if script.trim().is_empty() {
                self.error(&format!("{base}.shell"), "the shell script is empty");
            }
        }
        if let Some(builtin) = t.builtin() {
            self.builtin(&format!("{base}.builtin"), builtin);
        }
    }

    fn builtin(&mut self, base: &str, builtin: &Builtin) {
        match builtin {
            Builtin::Sleep { .. } => {}
            Builtin::Log { message, .. } => {
                if message.trim().is_empty() {
                    self.error(&format!("{base}.message"), "the log message is empty");
                }
            }
            Builtin::Notify { channel, .. } => {
                if channel.is_empty() || channel.len() > 63 {
                    self.error(
                        &format!("{base}.channel"),
                        "a NOTIFY channel name must have 1 to 63 bytes",
                    );
                }
            }
            Builtin::Http {
                url,
                expect_status,
                headers,
                ..
            } => {
                let rest = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"));
                match rest {
                    None => self.error_hint(
                        &format!("{base}.url"),
                        format!("`{url}` is not an http:// or https:// URL"),
                        None,
                    ),
                    Some(rest) if rest.split(['/', '?', '#']).next().is_none_or(str::is_empty) => {
                        self.error(&format!("{base}.url"), format!("`{url}` has no host"));
                    }
                    Some(_) => {}
                }
                if expect_status.as_ref().is_some_and(Vec::is_empty) {
                    self.error_hint(
                        &format!("{base}.expectStatus"),
                        "`expectStatus` is empty, so every response would fail the run",
                        Some("list the accepted codes, e.g. [200, 204], or remove it to accept any 2xx".into()),
                    );
                }
                for name in headers.keys() {
                    // RFC 9110 token characters.
                    let valid = !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                    if !valid {
                        self.error_at(
                            FieldPath::parse(base).key("headers").key(name.clone()),
                            format!("`{name}` is not an HTTP header name"),
                        );
                    }
                }
                for (i, code) in expect_status.iter().flatten().enumerate() {
                    if !(100..=599).contains(code) {
                        self.error(
                            &format!("{base}.expectStatus[{i}]"),
                            format!("{code} is not an HTTP status code (100 to 599)"),
                        );
                    }
                }
            }
        }
    }

    fn timeout(&mut self, t: &TimeoutSpec) {
        let parts: Vec<&str> = t.table.split('.').collect();
        if parts.len() > 2
            || parts
                .iter()
                .any(|p| p.trim().is_empty() || p.contains('\0'))
        {
            self.error_hint(
                "spec.table",
                format!("`{}` is not a table name", t.table),
                Some("write `table` or `schema.table`".into()),
            );
        }
        if t.column.trim().is_empty() {
            self.error("spec.column", "the column is empty");
        }
        if t.after.0 == Duration::ZERO {
            self.error("spec.after", "must be longer than 0s");
        }
        if let Some(history) = &t.history {
            self.positive("spec.history.keepFor", history.keep_for);
        }
        if let Some(condition) = &t.where_ {
            let shape = scan_sql(condition);
            if shape.statements == 0 {
                self.error(
                    "spec.where",
                    "the condition is empty; remove `where` to expire every row",
                );
            } else if shape.statements > 1 {
                self.error(
                    "spec.where",
                    "`where` is one SQL condition; it must not contain `;`",
                );
            } else if shape.max_param > 0 {
                self.error("spec.where", "`where` cannot use $n parameters");
            }
        }
        let deletes = t.delete == Some(true);
        match (&t.set, deletes) {
            (Some(_), true) => {
                self.error_hint(
                    "spec.delete",
                    "`set` and `delete: true` are exclusive",
                    Some("a row is either updated or deleted when it expires".into()),
                );
            }
            (None, false) => {
                self.error_hint(
                    "spec",
                    "a Timeout needs `set` or `delete: true`",
                    Some("e.g. `set: {status: expired}`".into()),
                );
            }
            (Some(set), false) => {
                if set.is_empty() {
                    self.error("spec.set", "`set` names no column");
                }
                for (column, value) in set {
                    if column.trim().is_empty() {
                        self.error("spec.set", "a column name in `set` is empty");
                    }
                    if value.is_object() || value.is_array() {
                        self.error(
                            &format!("spec.set.{column}"),
                            "values in `set` must be a string, a number, true, false or null",
                        );
                    }
                }
            }
            (None, true) => {}
        }
        if let Some(batch) = t.batch_size {
            if batch == 0 || batch > MAX_BATCH_SIZE {
                self.error(
                    "spec.batchSize",
                    format!("batchSize must be between 1 and {MAX_BATCH_SIZE}"),
                );
            }
        }
    }

    fn connection(&mut self, c: &ConnectionSpec) {
        let example = "e.g. postgres://report@db2:5432/reporting?sslmode=require";
        let scheme = c.url.split_once("://").map(|(scheme, _)| scheme.trim());
        let parsed = if c.url.trim().is_empty() {
            // An empty conninfo parses, as "every default": never what was meant.
            self.error_hint("spec.url", "the URL is empty", Some(example.into()));
            None
        } else if let Some(scheme) = scheme.filter(|s| !matches!(*s, "postgres" | "postgresql")) {
            // Only the scheme is shown: the rest may hold a password.
            self.error_hint(
                "spec.url",
                format!("`{scheme}://` is not a PostgreSQL URL"),
                Some(format!("write postgres:// or postgresql://, {example}")),
            );
            None
        } else {
            // libpq's reading, TLS keys included (`sslmode=verify-full`, `sslrootcert`), as
            // pgsched connects with it. The certificate files are not read here: they live on
            // the machine pgsched runs on, not where the specs are validated.
            Some(crate::pgurl::parse(&c.url))
        };
        match parsed {
            Some(Err(e)) => {
                self.error_hint(
                    "spec.url",
                    format!("not a PostgreSQL connection URL: {e}"),
                    Some(example.into()),
                );
            }
            // Say where without repeating the secret.
            Some(Ok(conn)) if conn.config.get_password().is_some() => self.error_hint(
                "spec.url",
                "the URL contains a password; secrets must not be written in spec files",
                Some(
                    "remove it from the URL and use `passwordFromEnv` or `passwordFromFile`".into(),
                ),
            ),
            None | Some(Ok(_)) => {}
        }
        if c.password_from_env.is_some() && c.password_from_file.is_some() {
            self.error(
                "spec.passwordFromFile",
                "`passwordFromEnv` and `passwordFromFile` are exclusive",
            );
        }
        if let Some(var) = &c.password_from_env {
            let valid = !var.is_empty()
                && !var.as_bytes()[0].is_ascii_digit()
                && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                self.error(
                    "spec.passwordFromEnv",
                    format!("`{var}` is not an environment variable name"),
                );
            }
        }
        if let Some(file) = &c.password_from_file {
            if file.trim().is_empty() {
                self.error("spec.passwordFromFile", "the path is empty");
            }
        }
    }
}

/// A schedule error as message and hint: a "did you mean" goes in the hint, where every other
/// suggestion of the loader stands.
fn split_suggestion(e: ScheduleError) -> (String, Option<String>) {
    match e {
        ScheduleError::UnknownTimeZone { name, suggestion } => (
            format!("unknown time zone `{name}`"),
            Some(match suggestion {
                Some(s) => format!("did you mean `{s}`?"),
                None => "use an IANA name such as `Europe/Zurich`, `America/New_York` or `UTC`".into(),
            }),
        ),
        ScheduleError::UnknownMacro { name, suggestion } => (
            format!("unknown schedule macro `{name}`"),
            Some(match suggestion {
                Some(s) => format!("did you mean `{s}`?"),
                None => "use `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`, `@every <duration>` or `@after <duration>`".into(),
            }),
        ),
        other => (other.to_string(), None),
    }
}

/// `spec.steps[1]` → "step 2", `spec.onFailure[0]` → "onFailure step 1", for hints.
fn describe_step(path: &str) -> String {
    let number = |rest: &str| {
        rest.trim_end_matches(']')
            .parse::<usize>()
            .map(|i| i + 1)
            .unwrap_or(0)
    };
    if let Some(rest) = path.strip_prefix("spec.steps[") {
        format!("step {}", number(rest))
    } else if let Some(rest) = path.strip_prefix("spec.onFailure[") {
        format!("onFailure step {}", number(rest))
    } else {
        path.to_string()
    }
}

fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Cycles of a graph given as adjacency lists (`edges[i]`: what `i` needs), each as the steps
/// along it: one per back edge of a depth-first search, so a graph with a cycle has at least
/// one reported. The search is iterative, so a long chain cannot overflow the stack.
fn find_cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut mark = vec![Mark::New; edges.len()];
    let mut cycles = Vec::new();
    for root in 0..edges.len() {
        if mark[root] != Mark::New {
            continue;
        }
        // (node, next edge to follow)
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::OnPath;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            if let Some(&to) = edges[node].get(*next) {
                *next += 1;
                match mark[to] {
                    Mark::New => {
                        mark[to] = Mark::OnPath;
                        path.push((to, 0));
                    }
                    Mark::OnPath => {
                        let from = path
                            .iter()
                            .position(|(n, _)| *n == to)
                            .expect("on the path");
                        cycles.push(path[from..].iter().map(|(n, _)| *n).collect());
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                path.pop();
            }
        }
    }
    cycles
}

/// For callers that keep the shown file name of each object.
pub fn shown_path(dir: &Path, relative: &Path) -> PathBuf {
    if dir == Path::new(".") {
        relative.to_path_buf()
    } else {
        dir.join(relative)
    }
}
