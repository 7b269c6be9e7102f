//! The two day fields, day-of-month and day-of-week, with the tokens only they take: `L`
//! (last), `W` (nearest weekday), `#` (nth weekday) and pg_cron's `$`, and which days of a given
//! month they select. A month's matching days depend only on its length and the weekday of its
//! 1st, so they are computed whole, as a bit set, once per month the search visits; nothing here
//! walks a calendar. `fields` reads the plain items (numbers, names, ranges, steps) of both.
//!
//! Meanings follow croner (and Quartz, where croner is silent):
//! - day-of-month: `L` (or `$`) the last day; `L-n` n days before it (Quartz; n from 1 to 30, and
//!   a month of n days or fewer has none); `nW` the weekday nearest day n, never leaving the
//!   month (a Saturday 1st gives Monday the 3rd, a Sunday last day the Friday before; a month
//!   without day n has none); `LW` the last weekday; `L-nW` the weekday nearest `L-n` (Quartz).
//! - day-of-week: `dL` (or croner's `d#L`) the last such weekday of the month, `d#n` the nth (1 to
//!   5; a month without a fifth simply has none). `d` is one weekday (number or name, 0 and 7
//!   being Sunday) or, as croner allows, a range of them (`MON-FRI#1`: each one's first).
//!
//! Every form is a list item like any other, so `1,15W,L` and `1#1,5L` work. The two fields are
//! combined as for plain values (see `cron`): either matches, unless one starts with `*`.

use super::error::CronToken;
use super::fields::{
    list_items, parse_item, reject_question_mark, FieldSpec, DAY_OF_MONTH, DAY_OF_WEEK,
};
use super::ScheduleError;

/// The day-of-month field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DayOfMonth {
    /// Bit d: day d, written as a number (or `*`, a range, a step).
    plain: u32,
    /// Bit k: the day k days before the last (`L` is k = 0, `L-3` is k = 3).
    from_end: u32,
    /// Bit d: the weekday nearest day d (`15W`).
    nearest: u32,
    /// Bit k: the weekday nearest the day k days before the last (`LW` is k = 0).
    nearest_from_end: u32,
    /// Written with a leading `*`, which Vixie does not count as a restriction.
    starred: bool,
}

/// The day-of-week field, weekdays numbered from 0 = Sunday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DayOfWeek {
    /// Bit w: every weekday w.
    every: u8,
    /// Per weekday, bit n - 1: its nth occurrence in the month (`1#2`).
    nth: [u8; 7],
    /// Bit w: the last weekday w of the month (`5L`).
    last: u8,
    /// Written with a leading `*`.
    starred: bool,
}

/// Both day fields, and how they combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Days {
    dom: DayOfMonth,
    dow: DayOfWeek,
    /// Vixie's rule: both fields must match when either starts with `*`; otherwise a day
    /// matches if either does.
    both: bool,
}

/// Reads the day-of-month field as written.
pub(super) fn parse_day_of_month(raw: &str) -> Result<DayOfMonth, ScheduleError> {
    reject_question_mark(&DAY_OF_MONTH, raw)?;
    let mut dom = DayOfMonth {
        plain: 0,
        from_end: 0,
        nearest: 0,
        nearest_from_end: 0,
        starred: raw.starts_with('*'),
    };
    for item in list_items(&DAY_OF_MONTH, raw)? {
        dom_item(raw, item, &mut dom)?;
    }
    Ok(dom)
}

/// Reads the day-of-week field as written.
pub(super) fn parse_day_of_week(raw: &str) -> Result<DayOfWeek, ScheduleError> {
    reject_question_mark(&DAY_OF_WEEK, raw)?;
    let mut dow = DayOfWeek {
        every: 0,
        nth: [0; 7],
        last: 0,
        starred: raw.starts_with('*'),
    };
    for item in list_items(&DAY_OF_WEEK, raw)? {
        dow_item(raw, item, &mut dow)?;
    }
    Ok(dow)
}

fn dom_item(raw: &str, item: &str, dom: &mut DayOfMonth) -> Result<(), ScheduleError> {
    let upper = item.to_ascii_uppercase();
    let day_then_w = upper
        .strip_suffix('W')
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    if upper == "L" || upper == "$" {
        dom.from_end |= 1;
    } else if upper == "LW" {
        dom.nearest_from_end |= 1;
    } else if let Some(rest) = upper.strip_prefix("L-") {
        let (count, weekday) = match rest.strip_suffix('W') {
            Some(count) => (count, true),
            None => (rest, false),
        };
        let k = count
            .parse::<u32>()
            .ok()
            .filter(|k| (1..=30).contains(k) && count.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                let problem = "`L-` counts back from the last day by a number of days from 1 to 30";
                item_error(&DAY_OF_MONTH, raw, item, CronToken::Last, problem)
            })?;
        if weekday {
            dom.nearest_from_end |= 1 << k;
        } else {
            dom.from_end |= 1 << k;
        }
    } else if let Some(day) = day_then_w {
        let d = day.parse::<u32>().ok().filter(|d| (1..=31).contains(d));
        let d = d.ok_or_else(|| {
            let problem = format!("there is no day {day}; `W` follows a day from 1 to 31");
            item_error(&DAY_OF_MONTH, raw, item, CronToken::Weekday, &problem)
        })?;
        dom.nearest |= 1 << d;
    } else if let Some(error) = misused_in_dom(raw, item, &upper) {
        return Err(error);
    } else {
        // Only days 1 to 31 can be set, so the bits fit.
        dom.plain |= u32::try_from(parse_item(&DAY_OF_MONTH, raw, item)?).unwrap_or(0);
    }
    Ok(())
}

/// The error for a day-of-month item that uses a day token in a form it does not take.
fn misused_in_dom(raw: &str, item: &str, upper: &str) -> Option<ScheduleError> {
    let (token, problem) = if upper.contains('#') {
        (
            CronToken::Nth,
            "`#` is day-of-week syntax, not day-of-month".to_string(),
        )
    } else if upper.contains('$') {
        (
            CronToken::Dollar,
            "`$` takes nothing before or after it".to_string(),
        )
    } else if upper == "W" {
        (CronToken::Weekday, "`W` needs a day before it".to_string())
    } else if upper.contains('W') {
        let problem = if upper.ends_with('W') {
            "`W` follows one day, not a range or a step"
        } else {
            "nothing may follow `W`"
        };
        (CronToken::Weekday, problem.to_string())
    } else if upper.contains('L') {
        let problem = if let Some((low, _)) = upper.split_once("-L") {
            format!("a range cannot end at `L`; write `{low}-31`, since days a month does not have simply do not match")
        } else if upper.ends_with('L') {
            "a weekday's last occurrence (`5L`) is day-of-week syntax, not day-of-month".to_string()
        } else {
            "`L` stands alone or as `L-n`, `LW` or `L-nW`".to_string()
        };
        (CronToken::Last, problem)
    } else {
        return None;
    };
    Some(item_error(&DAY_OF_MONTH, raw, item, token, &problem))
}

/// An error about one item of a day field: the field is always shown, the item too when the
/// field is a list of several.
fn item_error(
    spec: &FieldSpec,
    raw: &str,
    item: &str,
    token: CronToken,
    problem: &str,
) -> ScheduleError {
    let problem = if item == raw {
        problem.to_string()
    } else {
        format!("in `{item}`, {problem}")
    };
    spec.misplaced(raw, token, problem)
}

/// Which occurrence of a weekday a day-of-week item asks for.
enum Occurrence {
    Every,
    Nth(u32),
    Last,
}

fn dow_item(raw: &str, item: &str, dow: &mut DayOfWeek) -> Result<(), ScheduleError> {
    let upper = item.to_ascii_uppercase();
    let fail = |token, problem: &str| item_error(&DAY_OF_WEEK, raw, item, token, problem);
    if upper.replace("WED", "").contains('W') {
        return Err(fail(
            CronToken::Weekday,
            "`W` has no meaning in the day-of-week field",
        ));
    }
    if upper.contains('$') {
        return Err(fail(
            CronToken::Dollar,
            "`$` has no meaning in the day-of-week field",
        ));
    }
    let (base, occurrence) = if let Some((base, n)) = upper.split_once('#') {
        let number = n
            .parse::<u32>()
            .ok()
            .filter(|_| n.bytes().all(|b| b.is_ascii_digit()));
        let occurrence = match number {
            _ if n == "L" => Occurrence::Last,
            Some(n @ 1..=5) => Occurrence::Nth(n),
            Some(n) if n > 5 => {
                let problem =
                    format!("a month has at most 5 of each weekday, so there is no occurrence {n}");
                return Err(fail(CronToken::Nth, &problem));
            }
            _ => {
                return Err(fail(
                    CronToken::Nth,
                    "`#` takes a number from 1 (the first) to 5",
                ))
            }
        };
        (base, occurrence)
    } else if let Some(base) = upper.strip_suffix('L') {
        (base, Occurrence::Last)
    } else {
        (upper.as_str(), Occurrence::Every)
    };
    let token = match occurrence {
        Occurrence::Nth(_) => CronToken::Nth,
        _ => CronToken::Last,
    };
    // No weekday name contains an `L`, so any left over is misplaced.
    if base.contains('L') || base.contains('#') {
        return Err(fail(token, "`L` or `#n` comes once, right after a weekday"));
    }
    if base.is_empty() {
        let problem = format!("`{}` needs a weekday before it", token.symbol());
        return Err(fail(token, &problem));
    }
    if !matches!(occurrence, Occurrence::Every) && (base.starts_with('*') || base.contains('/')) {
        return Err(fail(
            token,
            "`L` and `#` follow a weekday or a range of them, not `*` or a step",
        ));
    }
    let bits = parse_item(&DAY_OF_WEEK, raw, base)?;
    // 7 is Sunday's other number.
    let weekdays = u8::try_from((bits | bits >> 7) & 0x7f).unwrap_or(0);
    match occurrence {
        Occurrence::Every => dow.every |= weekdays,
        Occurrence::Last => dow.last |= weekdays,
        Occurrence::Nth(n) => {
            for (w, nth) in dow.nth.iter_mut().enumerate() {
                if weekdays & 1 << w != 0 {
                    *nth |= 1 << (n - 1);
                }
            }
        }
    }
    Ok(())
}

/// The lengths a month can have: February's depend on the year.
const LENGTHS: [&[u32]; 12] = [
    &[31],
    &[28, 29],
    &[31],
    &[30],
    &[31],
    &[30],
    &[31],
    &[31],
    &[30],
    &[31],
    &[30],
    &[31],
];

impl Days {
    /// Both day fields, combined by Vixie's rule.
    pub(super) fn new(dom: DayOfMonth, dow: DayOfWeek) -> Days {
        Days {
            dom,
            dow,
            both: dom.starred || dow.starred,
        }
    }

    /// The days that match in a month of `len` days whose 1st is weekday `first` (0 = Sunday):
    /// bit d for day d.
    pub(super) fn in_month(&self, len: u32, first: u32) -> u32 {
        // Bits 1 to len.
        let whole_month = u32::MAX >> (31 - len) & !1;
        let by_date = self.dom_days(len, first) & whole_month;
        let by_weekday = self.dow_days(len, first) & whole_month;
        if self.both {
            by_date & by_weekday
        } else {
            by_date | by_weekday
        }
    }

    /// Whether any day of any month in `months` (bit m for month m) can ever match. Each month
    /// starts on every weekday in some year, February with both its lengths, so trying each
    /// combination is exact.
    pub(super) fn can_match(&self, months: u64) -> bool {
        (1..=12u32)
            .filter(|m| months & 1 << m != 0)
            .flat_map(|m| LENGTHS[m as usize - 1].iter())
            .any(|&len| (0..7).any(|first| self.in_month(len, first) != 0))
    }

    fn dom_days(&self, len: u32, first: u32) -> u32 {
        let dom = &self.dom;
        let mut days = dom.plain;
        for k in bits(dom.from_end).filter(|&k| k < len) {
            days |= 1 << (len - k);
        }
        for d in bits(dom.nearest).filter(|&d| d <= len) {
            days |= 1 << nearest_weekday(d, len, first);
        }
        for k in bits(dom.nearest_from_end).filter(|&k| k < len) {
            days |= 1 << nearest_weekday(len - k, len, first);
        }
        days
    }

    fn dow_days(&self, len: u32, first: u32) -> u32 {
        let dow = &self.dow;
        let mut days = 0;
        for w in 0..7u32 {
            // The first day of the month that falls on weekday w, then every 7 days.
            let d0 = 1 + (w + 7 - first) % 7;
            let occurrences = (len - d0) / 7 + 1;
            if dow.every & 1 << w != 0 {
                days |= (0..occurrences).fold(0, |acc, i| acc | 1 << (d0 + 7 * i));
            }
            for n in bits(u32::from(dow.nth[w as usize])).filter(|&n| n < occurrences) {
                days |= 1 << (d0 + 7 * n);
            }
            if dow.last & 1 << w != 0 {
                days |= 1 << (d0 + 7 * (occurrences - 1));
            }
        }
        days
    }
}

/// The weekday (Monday to Friday) nearest day `d` of a month of `len` days whose 1st is weekday
/// `first`, without leaving the month: a Saturday moves to the Friday before unless that is in
/// the previous month, a Sunday to the Monday after unless that is in the next.
fn nearest_weekday(d: u32, len: u32, first: u32) -> u32 {
    match (first + d - 1) % 7 {
        6 if d > 1 => d - 1,
        6 => d + 2,
        0 if d < len => d + 1,
        0 => d - 2,
        _ => d,
    }
}

/// The positions of the set bits, lowest first.
fn bits(mut set: u32) -> impl Iterator<Item = u32> {
    std::iter::from_fn(move || {
        (set != 0).then(|| {
            let bit = set.trailing_zeros();
            set &= set - 1;
            bit
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_days(dom: &str, dow: &str) -> Result<Days, ScheduleError> {
        Ok(Days::new(parse_day_of_month(dom)?, parse_day_of_week(dow)?))
    }

    fn days(dom: &str, dow: &str, len: u32, first: u32) -> Vec<u32> {
        let set = parse_days(dom, dow).unwrap().in_month(len, first);
        bits(set).collect()
    }

    #[test]
    fn selects_the_days_of_one_month() {
        // February 2024: 29 days, the 1st a Thursday (4).
        let feb = |dom: &str, dow: &str| days(dom, dow, 29, 4);
        assert_eq!(feb("L", "*"), [29]);
        assert_eq!(feb("$", "*"), [29]);
        assert_eq!(feb("L-1", "*"), [28]);
        assert_eq!(feb("L-28", "*"), [1]);
        assert_eq!(feb("L-29", "*"), [0u32; 0]);
        assert_eq!(feb("LW", "*"), [29]); // a Thursday
        assert_eq!(feb("3W", "*"), [2]); // Saturday 3rd -> Friday 2nd
        assert_eq!(feb("4W", "*"), [5]); // Sunday 4th -> Monday 5th
        assert_eq!(feb("30W", "*"), [0u32; 0]);
        assert_eq!(feb("*", "4L"), [29]);
        assert_eq!(feb("*", "4#5"), [29]);
        assert_eq!(feb("*", "5#5"), [0u32; 0]);
        assert_eq!(feb("*", "MON#1,FRIL"), [5, 23]);
        assert_eq!(feb("*", "SUN#L"), [25]);
        assert_eq!(feb("*", "7L"), [25]);
        assert_eq!(feb("1,15W,L", "*"), [1, 15, 29]);
        assert_eq!(feb("L", "1#1"), [5, 29]); // both restricted: either
        assert_eq!(feb("*/2", "4L"), [29]); // a `*` field: both
        assert_eq!(feb("*", "MON-WED#2"), [12, 13, 14]);
        // June 2024: 30 days, the 1st a Saturday (6): 1W is Monday the 3rd; 30 is a Sunday, so
        // its nearest weekday within the month is Friday the 28th, as is LW.
        assert_eq!(days("1W", "*", 30, 6), [3]);
        assert_eq!(days("30W", "*", 30, 6), [28]);
        assert_eq!(days("LW", "*", 30, 6), [28]);
        assert_eq!(days("L-1W", "*", 30, 6), [28]); // the 29th is a Saturday
    }

    #[test]
    fn knows_when_no_day_can_ever_match() {
        let can =
            |dom: &str, dow: &str, months: u64| parse_days(dom, dow).unwrap().can_match(months);
        assert!(!can("30", "*", 1 << 2));
        assert!(!can("30W", "*", 1 << 2));
        assert!(can("29W", "*", 1 << 2));
        assert!(can("*", "1#5", 1 << 2)); // a leap February starting on a Monday
        assert!(!can("1-7", "*/2", 0)); // no month at all
        assert!(!can("*/8", "1#5", 1 << 2)); // days 1, 9, 17, 25 are never a fifth Monday
        assert!(can("*/4", "1#5", 1 << 2)); // ...but day 29 is, in 2016
        assert!(!can("*/29", "1#5", 1 << 2)); // days 1 and 30
    }
}
