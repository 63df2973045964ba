use super::*;

fn at(s: &str) -> Wall {
    s.parse::<Timestamp>().unwrap().as_millisecond()
}

fn fmt(t: Wall) -> String {
    Timestamp::from_millisecond(t).unwrap().to_string()
}

fn spec(expr: &str, zone: &str) -> ScheduleSpec {
    ScheduleSpec {
        text: expr.into(),
        rule: Rule::Cron(Cron::parse(expr).unwrap()),
        timezone: Zone::parse(zone).unwrap(),
        overlap: Overlap::Skip,
        catch_up: false,
    }
}

/// The next `n` due times after `from`.
fn next_n(s: &ScheduleSpec, from: &str, n: usize) -> Vec<String> {
    let mut t = at(from);
    (0..n)
        .map(|_| {
            t = s.next_after(t).unwrap();
            fmt(t)
        })
        .collect()
}

#[test]
fn fields_lists_ranges_steps_and_names() {
    let s = spec("*/15 9-10 * * mon-fri", "UTC");
    // 2026-11-27 is a Friday.
    assert_eq!(
        next_n(&s, "2026-11-27T10:20:00Z", 4),
        [
            "2026-11-27T10:30:00Z",
            "2026-11-27T10:45:00Z",
            "2026-11-30T09:00:00Z",
            "2026-11-30T09:15:00Z"
        ]
    );
    let s = spec("5,35 0 1 jan,JUL *", "UTC");
    assert_eq!(
        next_n(&s, "2026-06-30T00:00:00Z", 3),
        [
            "2026-07-01T00:05:00Z",
            "2026-07-01T00:35:00Z",
            "2027-01-01T00:05:00Z"
        ]
    );
    // 7 is Sunday too; `5/20` is 5, 25, 45.
    let s = spec("5/20 12 * * 7", "UTC");
    assert_eq!(
        next_n(&s, "2026-11-29T12:06:00Z", 3),
        [
            "2026-11-29T12:25:00Z",
            "2026-11-29T12:45:00Z",
            "2026-12-06T12:05:00Z"
        ]
    );
    // Strictly after, at second 0.
    let s = spec("* * * * *", "UTC");
    assert_eq!(
        next_n(&s, "2026-11-29T12:00:00Z", 2),
        ["2026-11-29T12:01:00Z", "2026-11-29T12:02:00Z"]
    );
    assert_eq!(
        next_n(&s, "2026-11-29T12:00:59.999Z", 1),
        ["2026-11-29T12:01:00Z"]
    );
}

#[test]
fn both_day_fields_restricted_means_either() {
    // The 13th, or any Friday (2026-11-13 is a Friday, 2026-11-20 too).
    let s = spec("0 0 13 * fri", "UTC");
    assert_eq!(
        next_n(&s, "2026-11-12T00:00:00Z", 4),
        [
            "2026-11-13T00:00:00Z",
            "2026-11-20T00:00:00Z",
            "2026-11-27T00:00:00Z",
            "2026-12-04T00:00:00Z"
        ]
    );
    // One restricted, the other `*`: only the restricted one decides.
    let s = spec("0 0 13 * *", "UTC");
    assert_eq!(
        next_n(&s, "2026-11-14T00:00:00Z", 1),
        ["2026-12-13T00:00:00Z"]
    );
    // Leap day: the next one is four years on.
    let s = spec("0 12 29 feb *", "UTC");
    assert_eq!(
        next_n(&s, "2026-11-29T00:00:00Z", 2),
        ["2028-02-29T12:00:00Z", "2032-02-29T12:00:00Z"]
    );
}

#[test]
fn shorthands() {
    for (short, long) in [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@ANNUALLY", "0 0 1 1 *"),
    ] {
        assert_eq!(Cron::parse(short).unwrap(), Cron::parse(long).unwrap());
    }
}

#[test]
fn bad_expressions_name_the_field_and_the_fault() {
    let e = |s: &str| Cron::parse(s).unwrap_err();
    assert_eq!(
        e("0 25 * * *"),
        "field 2 (hour) \"25\" is out of range 0-23"
    );
    assert_eq!(
        e("60 * * * *"),
        "field 1 (minute) \"60\" is out of range 0-59"
    );
    assert_eq!(
        e("0 0 0 * *"),
        "field 3 (day-of-month) \"0\" is out of range 1-31"
    );
    assert_eq!(
        e("0 0 * 13 *"),
        "field 4 (month) \"13\" is out of range 1-12"
    );
    assert_eq!(
        e("0 0 * * 8"),
        "field 5 (day-of-week) \"8\" is out of range 0-7"
    );
    assert_eq!(
        e("0 0 * foo *"),
        "field 4 (month) \"foo\" is not a number or a name (jan…dec)"
    );
    assert_eq!(e("x * * * *"), "field 1 (minute) \"x\" is not a number");
    // A step past the field's end is one value (as cron has it), never an overflow.
    assert_eq!(
        next_n(
            &spec("30/4294967295 * * * *", "UTC"),
            "2026-11-27T10:20:00Z",
            2
        ),
        ["2026-11-27T10:30:00Z", "2026-11-27T11:30:00Z"]
    );
    assert_eq!(
        next_n(&spec("0 */24 * * *", "UTC"), "2026-11-27T10:20:00Z", 2),
        ["2026-11-28T00:00:00Z", "2026-11-29T00:00:00Z"]
    );
    assert_eq!(
        e("*/0 * * * *"),
        "field 1 (minute) \"*/0\": the step after / must be at least 1"
    );
    assert_eq!(
        e("0 5-2 * * *"),
        "field 2 (hour) \"5-2\": a range goes from the lower value to the higher"
    );
    assert_eq!(
        e("0 1,,2 * * *"),
        "field 2 (hour) \"1,,2\" has an empty list item"
    );
    assert_eq!(
        e("* * * *"),
        "expected 5 fields (minute hour day-of-month month day-of-week), found 4"
    );
    assert!(e("0 * * * * *").contains("found 6 (a seconds or year field"));
    assert!(e("@reboot").contains("autostart"));
    assert!(e("@often").contains("unknown shorthand \"@often\""));
    assert_eq!(
        e("0 0 30 feb *"),
        "day-of-month \"30\" never falls in month \"feb\": this schedule would never run"
    );
    assert!(e("0 0 31 4,6,9,11 *").contains("never"));
    // With a day of week as well, either matches: it does run.
    assert!(Cron::parse("0 0 30 feb mon").is_ok());
    assert!(Cron::parse("0 0 29 feb *").is_ok());
}

#[test]
fn every_is_aligned_to_the_epoch() {
    let s = ScheduleSpec {
        text: "every 15m".into(),
        rule: Rule::Every(Duration::from_secs(900)),
        timezone: Zone::utc(),
        overlap: Overlap::Skip,
        catch_up: false,
    };
    assert_eq!(
        next_n(&s, "2026-11-29T12:07:13Z", 3),
        [
            "2026-11-29T12:15:00Z",
            "2026-11-29T12:30:00Z",
            "2026-11-29T12:45:00Z"
        ]
    );
    assert_eq!(
        next_n(&s, "2026-11-29T12:15:00Z", 1),
        ["2026-11-29T12:30:00Z"]
    );
}

#[test]
fn dst_changes_in_a_named_zone() {
    if !std::path::Path::new("/usr/share/zoneinfo/Europe/Paris").exists() {
        eprintln!("SKIPPED dst_changes_in_a_named_zone: no /usr/share/zoneinfo/Europe/Paris");
        return;
    }
    // Spring forward: 2026-03-29 02:00 CET becomes 03:00 CEST; 02:30 does not exist and runs
    // at 03:30 (01:30 UTC), once.
    let s = spec("30 2 * * *", "Europe/Paris");
    assert_eq!(
        next_n(&s, "2026-03-28T12:00:00Z", 3),
        [
            "2026-03-29T01:30:00Z",
            "2026-03-30T00:30:00Z",
            "2026-03-31T00:30:00Z"
        ]
    );
    // Every 30 minutes across the gap: 01:30 CET, then 03:00 CEST (02:00 and 02:30 map to
    // 03:00 and 03:30, the same times), no run lost or doubled.
    let s = spec("*/30 * * * *", "Europe/Paris");
    assert_eq!(
        next_n(&s, "2026-03-29T00:10:00Z", 4),
        [
            "2026-03-29T00:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-29T01:30:00Z",
            "2026-03-29T02:00:00Z"
        ]
    );
    // Fall back: 2026-10-25 03:00 CEST becomes 02:00 CET; 02:30 occurs twice, runs once.
    let s = spec("30 2 * * *", "Europe/Paris");
    assert_eq!(
        next_n(&s, "2026-10-24T12:00:00Z", 2),
        ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
    );
    // Formatting uses the zone's offset at that time.
    assert_eq!(
        s.timezone.format(at("2026-10-26T01:30:00Z")),
        "2026-10-26T02:30:00+01:00"
    );
}

#[test]
fn zones() {
    assert_eq!(Zone::parse("UTC").unwrap().name, "UTC");
    for bad in [
        "../etc/passwd",
        "/etc/localtime",
        "Europe/../../etc",
        "a b",
        "",
    ] {
        let e = Zone::parse(bad).unwrap_err();
        assert!(e.contains("is not a time zone name"), "{bad}: {e}");
    }
    let e = Zone::parse("Mars/Olympus").unwrap_err();
    assert!(e.starts_with("unknown time zone \"Mars/Olympus\""), "{e}");
    if std::path::Path::new("/etc/localtime").exists() {
        assert_eq!(Zone::parse("local").unwrap().name, "local");
    }
}
