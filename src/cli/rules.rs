//! `incidentctl rules test`: replaying files through the shipped engine and comparing with expectations.

use super::*;

#[derive(Subcommand, Debug)]
pub enum RulesCmd {
    /// The loaded rules with kind, severity and counts.
    List,
    /// Validate a config file (and its rules.d) without a daemon; exit 1 on any error.
    Check {
        #[arg(default_value = "/etc/incidentd/incidentd.toml")]
        config: PathBuf,
    },
    /// Replay a log or NDJSON file offline through the engine, on event time, and print what
    /// would fire.
    Test {
        /// The input file (`-` for standard input).
        file: PathBuf,
        /// A config file (with its rules_dir), a rules file, or a folder of rules files.
        #[arg(long, default_value = "/etc/incidentd/incidentd.toml")]
        rules: PathBuf,
        /// How to read each line.
        #[arg(long, value_enum, default_value_t = crate::replay::Format::Ndjson)]
        format: crate::replay::Format,
        /// Year for syslog timestamps (default: the file's modification year).
        #[arg(long)]
        year: Option<i32>,
        /// A JSON file `{"detections":[{"rule","ts","key"},…]}`: compare, and exit 1 on any
        /// missing or unexpected detection.
        #[arg(long)]
        expect: Option<PathBuf>,
        /// Threads that find, parse and match lines while one applies them in order (the
        /// answer is the same): default one per core when there are two or more (at most
        /// 8, as for a larger N); 0 reads on one thread.
        #[arg(long)]
        threads: Option<usize>,
        /// Lines longer than this are cut to it and marked `truncated` (NDJSON lines are
        /// rejected), as a file source's `max_line_bytes` does.
        #[arg(long, default_value_t = crate::source::config::DEFAULT_MAX_LINE_BYTES as u64,
              value_parser = clap::value_parser!(u64).range(16..))]
        max_line_bytes: u64,
    },
    /// Import fail2ban's jails and filters as incidentd rules and nftables ban actions (a
    /// fragment for the main config); what cannot be imported is reported with the reason.
    #[command(name = "import-fail2ban")]
    ImportFail2ban {
        /// fail2ban's configuration folder (jail.conf, jail.d, filter.d…).
        #[arg(default_value = "/etc/fail2ban")]
        dir: PathBuf,
        /// Import this jail (repeatable); default: every enabled jail.
        #[arg(long = "jail")]
        jails: Vec<String>,
        /// Write the fragment to this file instead of standard output (`-o` is the output
        /// format, as for every command).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only report what would be imported: the jails, and every filter in filter.d.
        #[arg(long)]
        check: bool,
    },
}

pub(super) fn rules_test(
    (file, format, year): (&std::path::Path, crate::replay::Format, Option<i32>),
    rules: &std::path::Path,
    expect: Option<&std::path::Path>,
    (threads, max_line_bytes): (Option<usize>, u64),
    json_out: bool,
) -> Result<(), CliError> {
    use std::io::{IsTerminal, Write as _};
    // Read the expectations first: a broken expect file fails before the replay runs.
    let expected = expect.map(read_expectations).transpose()?;
    let configs = crate::config::load_rules(rules).map_err(|e| CliError::Failed(e.to_string()))?;
    let mut engine = crate::engine::Engine::new(&configs);
    let stdin = file.as_os_str() == "-";
    let (input, total, mtime): (Box<dyn std::io::Read>, u64, Option<std::time::SystemTime>) =
        if stdin {
            (Box::new(std::io::stdin().lock()), 0, None)
        } else {
            let f = std::fs::File::open(file)
                .map_err(|e| CliError::Failed(format!("cannot open {}: {e}", file.display())))?;
            let meta = f.metadata().ok();
            (
                Box::new(f),
                meta.as_ref().map(|m| m.len()).unwrap_or(0),
                meta.and_then(|m| m.modified().ok()),
            )
        };
    let file_year = mtime
        .map(time::OffsetDateTime::from)
        .unwrap_or_else(time::OffsetDateTime::now_utc)
        .year();
    let replay = crate::replay::Replay {
        format,
        year: year.unwrap_or(file_year),
        host: crate::event::local_hostname(),
        default_ts: SystemClock.now(),
        // As the daemon's default `[engine] max_future_skew`.
        max_future_skew: crate::watermark::DEFAULT_MAX_FUTURE_SKEW,
        workers: threads,
        max_line_bytes: usize::try_from(max_line_bytes).unwrap_or(usize::MAX),
    };
    let show_progress = !json_out && total > (8 << 20) && std::io::stderr().is_terminal();
    // Detections are kept only as far as needed: all of them to compare with expectations,
    // the first 50 to show; `-o json` writes each one as it fires, so memory does not grow
    // with the number of detections.
    let keep = if expected.is_some() {
        usize::MAX
    } else if json_out {
        0
    } else {
        50
    };
    let mut kept = Vec::new();
    let mut json = json_out.then(|| {
        let mut w = std::io::BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
        crate::cli::wrote(w.write_all(b"{\"detections\":["));
        w
    });
    let mut first = true;
    let report = replay
        .run(
            &mut engine,
            input,
            |done| {
                if show_progress {
                    eprint!("\r{:>3}% of {} MB", done * 100 / total.max(1), total >> 20);
                }
            },
            &mut |d| {
                if let Some(w) = json.as_mut() {
                    let comma: &[u8] = if first { b"" } else { b"," };
                    first = false;
                    crate::cli::wrote(w.write_all(comma));
                    crate::cli::wrote(
                        serde_json::to_writer(&mut *w, &d).map_err(std::io::Error::from),
                    );
                }
                if kept.len() < keep {
                    kept.push(d);
                }
            },
        )
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", file.display())))?;
    if show_progress {
        eprintln!();
    }
    let verdict = expected.map(|want| compare_detections(&want, &kept));
    // Like `send`: a file none of whose lines could be read is a failure (a wrong --format,
    // say), not an empty report.
    let all_rejected = report.rejected > 0 && report.events == 0;
    let all_rejected_err = || {
        CliError::Failed(format!(
            "every line was rejected ({} lines; is --format right?)",
            report.rejected
        ))
    };
    if let Some(mut w) = json {
        // The counts after the detections: `],` then the report's own fields.
        let counts = serde_json::to_string(&report).unwrap_or_default();
        let fields = counts.strip_prefix('{').unwrap_or(&counts);
        crate::cli::wrote(w.write_all(b"],"));
        crate::cli::wrote(w.write_all(fields.as_bytes()));
        crate::cli::wrote(w.write_all(b"\n"));
        crate::cli::wrote(w.flush());
        if all_rejected {
            return Err(all_rejected_err());
        }
        return verdict.unwrap_or(Ok(()));
    }
    let rows: Vec<Vec<String>> = report
        .rules
        .iter()
        .map(|r| vec![r.id.clone(), r.matched.to_string(), r.fired.to_string()])
        .collect();
    out!("{}", table(&["RULE", "MATCHED", "FIRED"], &rows));
    outln!();
    let shown = kept.len().min(50);
    let rows: Vec<Vec<String>> = kept[..shown]
        .iter()
        .map(|d| {
            vec![
                d.ts.to_string(),
                d.rule.clone(),
                d.key.clone(),
                d.count.to_string(),
            ]
        })
        .collect();
    out!("{}", table(&["EVENT TIME", "RULE", "KEY", "COUNT"], &rows));
    if report.detected > shown as u64 {
        outln!(
            "… and {} more detections (-o json lists them all)",
            report.detected - shown as u64
        );
    }
    for (line, err) in &report.first_rejections {
        eprintln!("line {line}: {err}");
    }
    let rate = report.lines as f64 / report.seconds.max(1e-9);
    outln!(
        "\n{} lines, {} events, {} not parsed (no rule could match), {} rejected, {} detections in {:.3} s ({:.0} lines/s)",
        report.lines,
        report.events,
        report.skipped,
        report.rejected,
        report.detected,
        report.seconds,
        rate
    );
    if report.oversize > 0 {
        outln!(
            "lines longer than {max_line_bytes} bytes: {} (cut and marked truncated; rejected as NDJSON)",
            report.oversize
        );
    }
    if all_rejected {
        return Err(all_rejected_err());
    }
    if let Some(v) = verdict {
        v?;
        outln!(
            "expectations met: {} detection(s) as expected",
            report.detected
        );
    }
    Ok(())
}

/// One expected detection: (rule, event time, incident key).
type Expected = (String, String, String);

pub(super) fn read_expectations(path: &std::path::Path) -> Result<Vec<Expected>, CliError> {
    #[derive(serde::Deserialize)]
    struct File {
        detections: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        rule: String,
        ts: Timestamp,
        key: String,
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", path.display())))?;
    let file: File = serde_json::from_str(&text)
        .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
    Ok(file
        .detections
        .into_iter()
        .map(|d| (d.rule, d.ts.to_string(), d.key))
        .collect())
}

/// Ok when the detections are exactly the expected ones, in order; else says which differ.
pub(super) fn compare_detections(
    want: &[Expected],
    got: &[crate::replay::ReplayDetection],
) -> Result<(), CliError> {
    let got: Vec<Expected> = got
        .iter()
        .map(|d| (d.rule.clone(), d.ts.to_string(), d.key.clone()))
        .collect();
    if got == want {
        return Ok(());
    }
    let mut lines = vec![format!(
        "expected {} detection(s), got {}",
        want.len(),
        got.len()
    )];
    for w in want.iter().filter(|w| !got.contains(w)) {
        lines.push(format!("  missing:    {} {} {}", w.1, w.0, w.2));
    }
    for g in got.iter().filter(|g| !want.contains(g)) {
        lines.push(format!("  unexpected: {} {} {}", g.1, g.0, g.2));
    }
    if lines.len() == 1 {
        lines.push("  the same detections, in another order".into());
    }
    Err(CliError::Failed(lines.join("\n")))
}

/// `incidentctl rules import-fail2ban`: the fragment to `out` (or standard output) and the
/// report to standard error; with `check`, the report alone (every filter in filter.d too).
pub(super) fn import_fail2ban(
    dir: &std::path::Path,
    jails: &[String],
    out: Option<&std::path::Path>,
    check: bool,
    json_out: bool,
) -> Result<(), CliError> {
    let imported =
        crate::fail2ban::import(dir, jails).map_err(|e| CliError::Failed(e.to_string()))?;
    let mut report = Vec::new();
    let mut lines = Vec::new();
    for j in &imported {
        match &j.outcome {
            Ok(imp) => {
                let n = imp.rule["regex"].as_array().map_or(0, Vec::len);
                lines.push(format!(
                    "jail {} (filter {}): imported as rule {} with {n} pattern{}",
                    j.name,
                    j.filter,
                    imp.rule["id"].as_str().unwrap_or(""),
                    if n == 1 { "" } else { "s" }
                ));
                lines.extend(imp.notes.iter().map(|n| format!("  - {n}")));
                report.push(json!({"jail": j.name, "filter": j.filter, "imported": true,
                    "rule": imp.rule["id"].as_str(), "patterns": n, "notes": imp.notes}));
            }
            Err(why) => {
                lines.push(format!(
                    "jail {} (filter {}): refused: {why}",
                    j.name, j.filter
                ));
                report.push(
                    json!({"jail": j.name, "filter": j.filter, "imported": false, "reason": why}),
                );
            }
        }
    }
    let mut filters = Vec::new();
    if check {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("filter.d"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.strip_suffix(".conf").map(str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        for name in names {
            match crate::fail2ban::load_filter(dir, &name, &Default::default()) {
                Ok(f) if !f.patterns.is_empty() => {
                    lines.push(format!(
                        "filter {name}: imported ({} pattern{}{})",
                        f.patterns.len(),
                        if f.patterns.len() == 1 { "" } else { "s" },
                        if f.refused.is_empty() {
                            String::new()
                        } else {
                            format!(", {} not imported", f.refused.len())
                        }
                    ));
                    lines.extend(
                        f.refused
                            .iter()
                            .map(|(p, why)| format!("  - not imported: `{p}`: {why}")),
                    );
                    filters.push(json!({"filter": name, "imported": true,
                        "patterns": f.patterns.len(), "refused": f.refused.iter().map(|(p, w)| json!({"pattern": p, "reason": w})).collect::<Vec<_>>()}));
                }
                Ok(f) => {
                    let why = if f.refused.is_empty() {
                        "no failregex".to_owned()
                    } else {
                        f.refused
                            .iter()
                            .map(|(p, w)| format!("`{p}`: {w}"))
                            .collect::<Vec<_>>()
                            .join("; ")
                    };
                    lines.push(format!("filter {name}: refused: {why}"));
                    filters.push(json!({"filter": name, "imported": false, "reason": why}));
                }
                Err(why) => {
                    lines.push(format!("filter {name}: refused: {why}"));
                    filters.push(json!({"filter": name, "imported": false, "reason": why}));
                }
            }
        }
    }
    let text = lines.join("\n");
    if check {
        if json_out {
            outln!(
                "{}",
                serde_json::to_string_pretty(&json!({"jails": report, "filters": filters}))
                    .unwrap_or_default()
            );
        } else {
            outln!("{text}");
        }
        return Ok(());
    }
    let fragment = crate::fail2ban::render(&imported, dir);
    match out {
        Some(path) => std::fs::write(path, &fragment)
            .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?,
        None => out!("{fragment}"),
    }
    eprintln!("{text}");
    if imported.iter().all(|j| j.outcome.is_err()) {
        return Err(CliError::Failed(if imported.is_empty() {
            "no jail to import (none is enabled; name one with --jail)".into()
        } else {
            "no jail could be imported".into()
        }));
    }
    Ok(())
}
