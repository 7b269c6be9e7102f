//! The server's settings: the ones pgsched manages (port, socket, no TCP) and the caller's, in
//! a file of their own that `postgresql.conf` includes.

use super::error::io_error;
use super::{EmbeddedError, EmbeddedPostgres};
use std::fs::{self, OpenOptions};
use std::io::Write;

const SETTINGS_FILE: &str = "pgsched.conf";
const INCLUDE_SETTINGS: &str = "include_if_exists = 'pgsched.conf'";

impl EmbeddedPostgres {
    /// Whether the settings give the server a TCP listener (the default has none).
    pub(super) fn listens_on_tcp(&self) -> bool {
        self.settings
            .iter()
            .rev()
            .find(|(name, _)| name.eq_ignore_ascii_case("listen_addresses"))
            .is_some_and(|(_, value)| !value.trim().is_empty())
    }

    pub(super) fn durability_off(&self) -> bool {
        self.settings.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case("fsync")
                && ["off", "false", "no", "0"].contains(&value.to_ascii_lowercase().as_str())
        })
    }

    /// Our settings live in a file of their own, rewritten on every start, so that changing them
    /// never means editing the user's postgresql.conf again.
    pub(super) fn ensure_settings_included(&self) -> Result<(), EmbeddedError> {
        let conf = self.data_dir.join("postgresql.conf");
        let text = fs::read_to_string(&conf).map_err(io_error("read", &conf))?;
        if text.lines().any(|line| line.trim() == INCLUDE_SETTINGS) {
            return Ok(());
        }
        let mut file = OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(io_error("open", &conf))?;
        write!(
            file,
            "\n# Written by pgsched on every start: port, socket, listen_addresses and its own \
             settings.\n{INCLUDE_SETTINGS}\n"
        )
        .map_err(io_error("write", &conf))
    }

    pub(super) fn write_settings(&self) -> Result<(), EmbeddedError> {
        let mut text = String::from("# Written by pgsched on every start; edits are lost.\n");
        let socket_dir = self.socket_dir.to_string_lossy();
        let port = self.port.to_string();
        let managed = [
            ("listen_addresses", ""),
            ("port", port.as_str()),
            ("unix_socket_directories", socket_dir.as_ref()),
        ];
        let extra = self.settings.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        for (name, value) in managed.into_iter().chain(extra) {
            text.push_str(&format!("{name} = {}\n", conf_value(value)));
        }
        let path = self.data_dir.join(SETTINGS_FILE);
        fs::write(&path, text).map_err(io_error("write", &path))?;
        self.give_to_server_user(&path)
    }
}

pub(super) fn valid_setting_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// postgresql.conf string syntax: quotes doubled, backslashes escaped.
pub(super) fn conf_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}
