//! GitLab's human-readable durations (`timeout: 1h 30m`, `start_in: 2 minutes`, `expire_in: 1 week`).
//!
//! GitLab parses these with ChronicDuration: a bare number is seconds, units may be abbreviated,
//! several parts add up (`1 hour and 30 minutes`), and `hh:mm:ss` is accepted.

/// Parses a duration into seconds. Returns `None` when the text is not a duration.
pub fn parse_seconds(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    if t.is_empty() {
        return None;
    }
    if let Ok(n) = t.parse::<u64>() {
        return Some(n);
    }
    if t.contains(':') && t.chars().all(|c| c.is_ascii_digit() || c == ':') {
        let mut total: u64 = 0;
        for part in t.split(':') {
            total = total.checked_mul(60)?.checked_add(part.parse::<u64>().ok()?)?;
        }
        return Some(total);
    }
    let mut total: f64 = 0.0;
    let mut rest = t.as_str();
    let mut parts = 0;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        if let Some(r) = rest.strip_prefix("and ") {
            rest = r;
            continue;
        }
        if rest.is_empty() {
            break;
        }
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = rest[num_len..].trim_start();
        let unit_len = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let mult = match unit {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            "w" | "wk" | "wks" | "week" | "weeks" => 604_800.0,
            "mo" | "mos" | "month" | "months" => 2_592_000.0,
            "y" | "yr" | "yrs" | "year" | "years" => 31_536_000.0,
            _ => return None,
        };
        total += n * mult;
        parts += 1;
        if parts > 32 {
            return None;
        }
    }
    if parts == 0 || !total.is_finite() || total > u64::MAX as f64 {
        return None;
    }
    Some(total.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_seconds;

    #[test]
    fn gitlab_examples() {
        let cases = [
            ("3600", Some(3600)),
            ("1h", Some(3600)),
            ("1h 30m", Some(5400)),
            ("1 hour and 30 minutes", Some(5400)),
            ("3 hours", Some(10_800)),
            ("30 minutes", Some(1800)),
            ("2 days", Some(172_800)),
            ("1 week", Some(604_800)),
            ("1 day, 2 hours", Some(93_600)),
            ("10 mins", Some(600)),
            ("1:30:00", Some(5400)),
            ("90 seconds", Some(90)),
            ("1.5 hours", Some(5400)),
            ("soon", None),
            ("", None),
            ("5 fortnights", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_seconds(text), want, "{text:?}");
        }
    }
}
