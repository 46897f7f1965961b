//! `spate clicks`: clicks per device type over a sliding window (the seeds' user-behaviour
//! pipeline).

/// One parsed click event: `deviceId|deviceType|time|click`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Click<'a> {
    /// Device id (non-empty).
    pub(crate) device_id: &'a str,
    /// Device type (non-empty).
    pub(crate) device_type: &'a str,
    /// Event time, ms since the epoch.
    pub(crate) time_ms: u64,
    /// Number of clicks (0 for an impression).
    pub(crate) clicks: u64,
}

/// Parses a click line: exactly four `|`-separated fields, the first two non-empty (after
/// trimming spaces), the last two unsigned decimal integers. Anything else is malformed (`None`).
pub(crate) fn parse_click(line: &str) -> Option<Click<'_>> {
    let mut it = line.split('|');
    let device_id = it.next()?.trim();
    let device_type = it.next()?.trim();
    let time_ms = it.next()?.trim().parse().ok()?;
    let clicks = it.next()?.trim().parse().ok()?;
    if it.next().is_some() || device_id.is_empty() || device_type.is_empty() {
        return None;
    }
    Some(Click {
        device_id,
        device_type,
        time_ms,
        clicks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rules() {
        assert_eq!(
            parse_click("dev-1|phone|1700000000000|1"),
            Some(Click {
                device_id: "dev-1",
                device_type: "phone",
                time_ms: 1_700_000_000_000,
                clicks: 1
            })
        );
        for bad in [
            "",
            "dev-1|phone|1",
            "dev-1|phone|1|1|x",
            "dev-1|phone|x|1",
            "dev-1|phone|1|-1",
            "|phone|1|1",
            "dev|  |1|1",
            "no separators",
            "\u{fffd}|||",
        ] {
            assert_eq!(parse_click(bad), None, "{bad:?}");
        }
    }
}
