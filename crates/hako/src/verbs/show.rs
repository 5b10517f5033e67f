//! Tables for people: the VM list, one VM, the result of an action.

use serde_json::Value;

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// 90 → "1m30s", 7300 → "2h01m", 200000 → "2d07h".
pub fn duration(secs: u64) -> String {
    let (d, h, m, sec) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{sec:02}s")
    } else {
        format!("{sec}s")
    }
}

/// Bytes as MiB or GiB.
pub fn size(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes % (1 << 30) == 0 {
        format!("{}G", bytes >> 30)
    } else {
        format!("{}M", bytes >> 20)
    }
}

fn exit(v: &Value) -> String {
    match (&v["code"], &v["signal"]) {
        (Value::Number(c), _) => format!("exit status {c}"),
        (_, Value::Number(sig)) => format!("killed by signal {sig}"),
        _ => "exit status unknown".into(),
    }
}

/// The state column: "crashed (exit status 1)" for a crash.
fn state(st: &Value) -> String {
    let state = s(&st["state"]);
    if state == "crashed" && st["last_exit"].is_object() {
        format!("{state} ({})", exit(&st["last_exit"]))
    } else {
        state
    }
}

/// Prints rows as columns, the first row a header.
fn columns(rows: &[Vec<String>]) {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// `hako list`: the VMs (all, or those with a process).
pub fn list(vms: &Value, all: bool) {
    let mut rows = vec![[
        "NAME",
        "STATE",
        "PID",
        "UPTIME",
        "CPUS",
        "MEMORY",
        "AUTOSTART",
    ]
    .map(String::from)
    .to_vec()];
    for v in vms.as_array().into_iter().flatten() {
        let st = s(&v["state"]);
        if !all && !matches!(st.as_str(), "running" | "paused") {
            continue;
        }
        rows.push(vec![
            s(&v["name"]),
            state(v),
            s(&v["pid"]),
            v["uptime_s"].as_u64().map(duration).unwrap_or("-".into()),
            s(&v["vcpus"]),
            v["memory_bytes"].as_u64().map(size).unwrap_or("-".into()),
            if v["autostart"] == true { "yes" } else { "no" }.into(),
        ]);
    }
    columns(&rows);
}

/// `hako info`: one VM, as `key: value` lines.
pub fn info(v: &Value) {
    let st = &v["status"];
    let def = &v["definition"];
    let c = &def["config"];
    let mut rows: Vec<(&str, String)> = vec![
        ("name", s(&st["name"])),
        ("uuid", s(&st["uuid"])),
        ("state", state(st)),
        ("pid", s(&st["pid"])),
        (
            "uptime",
            st["uptime_s"].as_u64().map(duration).unwrap_or("-".into()),
        ),
        ("accel", s(&c["accel"])),
        ("vcpus", s(&c["cpus"])),
        (
            "memory",
            c["memory"].as_u64().map(size).unwrap_or("-".into()),
        ),
        ("kernel", s(&c["kernel"])),
    ];
    for i in c["initrds"].as_array().into_iter().flatten() {
        rows.push(("initrd", s(i)));
    }
    rows.push(("cmdline", s(&c["cmdline"])));
    for d in c["disks"].as_array().into_iter().flatten() {
        rows.push(("disk", s(&d["path"])));
    }
    rows.push((
        "autostart",
        if def["autostart"] == true {
            "yes"
        } else {
            "no"
        }
        .into(),
    ));
    rows.push(("restart policy", s(&def["restart_policy"])));
    if st["last_exit"].is_object() {
        rows.push(("last exit", exit(&st["last_exit"])));
    }
    if st["restarts_last_minute"].as_u64().unwrap_or(0) > 0 {
        rows.push(("restarts (1 min)", s(&st["restarts_last_minute"])));
    }
    if !st["note"].is_null() {
        rows.push(("note", s(&st["note"])));
    }
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0) + 1;
    for (k, val) in rows {
        println!("{:<w$} {val}", format!("{k}:"));
    }
}

/// `hako snapshot-list`: a VM's snapshots, oldest first.
pub fn snapshots(v: &Value) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut rows = vec![["NAME", "AGE", "MEMORY", "DISKS", "VM WAS"]
        .map(String::from)
        .to_vec()];
    for snap in v.as_array().into_iter().flatten() {
        let age = snap["created"]
            .as_u64()
            .map(|c| duration(now.saturating_sub(c)))
            .unwrap_or("-".into());
        rows.push(vec![
            s(&snap["name"]),
            age,
            size(snap["memory_data_bytes"].as_u64().unwrap_or(0)),
            snap["disks"].as_array().map_or(0, Vec::len).to_string(),
            if snap["was_paused"] == true {
                "paused"
            } else {
                "running"
            }
            .into(),
        ]);
    }
    columns(&rows);
}

/// What an action leaves: "NAME: running (pid 123)".
pub fn status_line(v: &Value) {
    let mut line = format!("{}: {}", s(&v["name"]), state(v));
    if let Some(pid) = v["pid"].as_u64() {
        line.push_str(&format!(" (pid {pid})"));
    }
    if let Value::String(note) = &v["note"] {
        line.push_str(&format!(": {note}"));
    }
    println!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(90), "1m30s");
        assert_eq!(duration(7300), "2h01m");
        assert_eq!(duration(200000), "2d07h");
        assert_eq!(size(512 << 20), "512M");
        assert_eq!(size(2 << 30), "2G");
        assert_eq!(size(1536 << 20), "1536M");
    }
}
