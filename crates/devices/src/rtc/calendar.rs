//! Civil-calendar arithmetic (proleptic Gregorian, UTC) and BCD helpers for the RTC.

/// A broken-down UTC date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// Full year, e.g. 2026.
    pub year: i64,
    /// 1-12.
    pub month: u32,
    /// 1-31.
    pub day: u32,
    /// 0-23.
    pub hour: u32,
    /// 0-59.
    pub minute: u32,
    /// 0-59.
    pub second: u32,
    /// 1 = Sunday ... 7 = Saturday (the MC146818 convention).
    pub weekday: u32,
}

/// Days from 1970-01-01 to the given civil date. Works on 400-year eras
/// (146097 days each) with years starting in March, so the leap day is last.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count from 1970-01-01 (inverse of [`days_from_civil`]).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Number of days in `month` of `year`.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

impl DateTime {
    /// Breaks down seconds since the Unix epoch.
    pub fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        // 1970-01-01 was a Thursday (5 in 1 = Sunday numbering).
        let weekday = ((days + 4).rem_euclid(7) + 1) as u32;
        DateTime {
            year,
            month,
            day,
            hour: sod / 3600,
            minute: sod / 60 % 60,
            second: sod % 60,
            weekday,
        }
    }

    /// Seconds since the Unix epoch, or `None` if a field is out of range.
    pub fn to_unix(&self) -> Option<i64> {
        let valid = (1..=12).contains(&self.month)
            && self.day >= 1
            && self.day <= days_in_month(self.year, self.month)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60;
        valid.then(|| {
            days_from_civil(self.year, self.month, self.day) * 86_400
                + i64::from(self.hour * 3600 + self.minute * 60 + self.second)
        })
    }
}

/// Binary 0-99 to packed BCD.
pub fn to_bcd(v: u32) -> u8 {
    let v = v % 100;
    ((v / 10) << 4 | (v % 10)) as u8
}

/// Packed BCD to binary; `None` if a nibble is not a decimal digit.
pub fn from_bcd(v: u8) -> Option<u32> {
    let (hi, lo) = (v >> 4, v & 0xf);
    (hi < 10 && lo < 10).then_some(u32::from(hi) * 10 + u32::from(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // 2026-11-22 00:00:00 UTC
        let t = 1_795_305_600;
        let d = DateTime::from_unix(t);
        assert_eq!((d.year, d.month, d.day, d.hour), (2026, 11, 22, 0));
        assert_eq!(d.weekday, 1, "a Sunday");
        assert_eq!(d.to_unix(), Some(t));
    }

    #[test]
    fn round_trip_over_many_days() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert!(d >= 1 && d <= days_in_month(y, m));
            assert_eq!(days_from_civil(y, m, d), days);
        }
        let t = 4_102_444_799; // 2099-12-31 23:59:59
        let dt = DateTime::from_unix(t);
        assert_eq!(
            (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second),
            (2099, 12, 31, 23, 59, 59)
        );
        assert_eq!(dt.to_unix(), Some(t));
    }

    #[test]
    fn invalid_fields_rejected() {
        let mut d = DateTime::from_unix(0);
        d.day = 31;
        d.month = 2;
        assert_eq!(d.to_unix(), None);
        d.month = 13;
        assert_eq!(d.to_unix(), None);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
    }

    #[test]
    fn bcd() {
        assert_eq!(to_bcd(59), 0x59);
        assert_eq!(from_bcd(0x59), Some(59));
        assert_eq!(from_bcd(0x5a), None);
        assert_eq!(from_bcd(0xa0), None);
    }
}
