//! The module's pure parts: version and value syntax, setting names, port choice.

use super::programs::major_version;
use super::settings::{conf_value, valid_setting_name};
use super::socket::{choose_port, PORT_HIGH, PORT_LOW};
use super::*;

#[test]
fn major_versions_match_pg_version_files() {
    assert_eq!(major_version("15.18"), "15");
    assert_eq!(major_version("9.6.24"), "9.6");
    assert_eq!(major_version("17beta1"), "17");
}

#[test]
fn conninfo_values_are_quoted_only_when_needed() {
    assert_eq!(conninfo_value("/tmp/x"), "/tmp/x");
    assert_eq!(conninfo_value("a b"), "'a b'");
    assert_eq!(conninfo_value(r"it's\"), r"'it\'s\\'");
    assert_eq!(conninfo_value(""), "''");
}

#[test]
fn conf_values_escape_quotes_and_backslashes() {
    assert_eq!(conf_value(r"a'b\c"), r"'a''b\\c'");
}

#[test]
fn setting_names_are_identifiers() {
    assert!(valid_setting_name("fsync"));
    assert!(valid_setting_name("auto_explain.log_min_duration"));
    assert!(!valid_setting_name("fsync = off\nport"));
    assert!(!valid_setting_name(""));
}

#[test]
fn ports_stay_in_range() {
    let dir = Path::new("/nonexistent/socket");
    let port = choose_port(Path::new("/some/data"), dir, false);
    assert!((PORT_LOW..PORT_HIGH).contains(&port));
    assert_eq!(port, choose_port(Path::new("/some/data"), dir, false));
}

#[test]
fn a_tcp_listener_skips_ports_taken_on_the_loopback() {
    let dir = Path::new("/nonexistent/socket");
    let data = Path::new("/some/data");
    let first = choose_port(data, dir, false);
    // The port the hash picks, taken by someone else (by us here; if the bind fails, it
    // was taken already).
    let _taken = std::net::TcpListener::bind(("127.0.0.1", first));
    let port = choose_port(data, dir, true);
    assert_ne!(port, first);
    assert!((PORT_LOW..PORT_HIGH).contains(&port));
}
