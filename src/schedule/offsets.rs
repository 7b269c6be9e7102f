//! A time zone's UTC offset at an instant, the next instant it changes, and the conversions between
//! instants and local times under one offset. chrono-tz does not list its transitions, so they
//! are found by probing and bisecting; kept apart from `dst` so that the rules there read
//! without the search.

use chrono::{DateTime, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// Offsets are probed this far apart (seconds), then bisected. No zone changes its offset and back
/// within six hours.
const OFFSET_PROBE_SECS: i64 = 6 * 3600;

/// The first instant in `(after, until]` whose UTC offset is not `offset` (the offset at
/// `after`); `None` if it holds throughout.
pub(super) fn first_offset_change(
    tz: Tz,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
    offset: i32,
) -> Option<DateTime<Utc>> {
    // Transitions fall on whole seconds, so flooring `after` keeps its offset.
    let mut low = after.timestamp();
    let end = until.timestamp();
    while low < end {
        let high = low.saturating_add(OFFSET_PROBE_SECS).min(end);
        if offset_at_secs(tz, high)? != offset {
            let (mut same, mut changed) = (low, high);
            while changed - same > 1 {
                let mid = same + (changed - same) / 2;
                if offset_at_secs(tz, mid)? == offset {
                    same = mid;
                } else {
                    changed = mid;
                }
            }
            return DateTime::from_timestamp(changed, 0);
        }
        low = high;
    }
    None
}

pub(super) fn offset_at(tz: Tz, t: DateTime<Utc>) -> i32 {
    tz.offset_from_utc_datetime(&t.naive_utc())
        .fix()
        .local_minus_utc()
}

fn offset_at_secs(tz: Tz, secs: i64) -> Option<i32> {
    DateTime::from_timestamp(secs, 0).map(|t| offset_at(tz, t))
}

/// The local time at instant `t` under `offset`.
pub(super) fn wall(t: DateTime<Utc>, offset: i32) -> Option<NaiveDateTime> {
    t.naive_utc()
        .checked_add_signed(TimeDelta::seconds(offset.into()))
}

/// The instant at which local time `m` shows under `offset`.
pub(super) fn instant(m: NaiveDateTime, offset: i32) -> Option<DateTime<Utc>> {
    m.checked_sub_signed(TimeDelta::seconds(offset.into()))
        .map(|n| n.and_utc())
}
