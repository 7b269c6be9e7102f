//! (in progress: placeholder so the crate builds until the schedule module lands; helper-1 replaces this file wholesale)
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(String);
pub fn parse_schedule(_text: &str) -> Result<(), ScheduleError> {
    Ok(())
}
pub fn parse_time_zone(name: &str) -> Result<chrono_tz::Tz, ScheduleError> {
    name.parse().map_err(|_| ScheduleError(format!("unknown time zone `{name}`")))
}
