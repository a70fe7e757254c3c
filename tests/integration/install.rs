//! `make install`: staged under DESTDIR the tree is where Debian expects it, and `make
//! uninstall` takes it away again; installed under a real prefix, the installed config
//! passes `incidentd --check-config` (its plugins_dir points at the installed plugins) and
//! the installed unit verifies.

use std::path::Path;
use std::process::Command;

use crate::util::*;

fn make(dir: &Path, args: &[String]) -> std::process::Output {
    let target = Path::new(BIN).parent().unwrap();
    Command::new("make")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .arg(format!("TARGET={}", target.display()))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("make (apt-get install make)")
}

fn ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file under `root`, relative, sorted.
fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[test]
fn a_staged_install_lays_out_every_file_and_uninstall_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("pkg");
    let d = format!("DESTDIR={}", dest.display());
    ok(
        &make(dir.path(), &["install".into(), d.clone()]),
        "make install",
    );
    let files = tree(&dest);
    for want in [
        "usr/bin/incidentd",
        "usr/bin/incidentctl",
        "etc/incidentd/incidentd.toml",
        "etc/incidentd/rules.d/ssh.toml",
        "etc/incidentd/templates/slack-detailed.txt",
        "usr/lib/incidentd/plugins/zscore/plugin.toml",
        "usr/lib/incidentd/plugins/zscore/zscore.py",
        "usr/lib/incidentd/plugins/README.md",
        "usr/lib/systemd/system/incidentd.service",
        "usr/lib/sysusers.d/incidentd.conf",
        "usr/lib/tmpfiles.d/incidentd.conf",
        "usr/share/polkit-1/rules.d/50-incidentd.rules",
        "usr/share/doc/incidentd/dropins/remediation.conf",
        "usr/share/doc/incidentd/dropins/egress.conf",
        "usr/share/man/man8/incidentd.8",
        "usr/share/man/man1/incidentctl.1",
    ] {
        assert!(
            files.iter().any(|f| f == want),
            "{want} missing from {files:#?}"
        );
    }
    assert!(dest.join("etc/systemd/system/incidentd.service.d").is_dir());
    let config = std::fs::read_to_string(dest.join("etc/incidentd/incidentd.toml")).unwrap();
    assert!(
        config.contains("plugins_dir = \"/usr/lib/incidentd/plugins\""),
        "{config}"
    );
    let man = std::fs::read_to_string(dest.join("usr/share/man/man1/incidentctl.1")).unwrap();
    assert!(man.starts_with(".ie") || man.contains(".TH"), "{man}");
    let mode = |p: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dest.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("usr/bin/incidentd"), 0o755);
    assert_eq!(mode("etc/incidentd/incidentd.toml"), 0o644);
    ok(
        &make(dir.path(), &["uninstall".into(), d]),
        "make uninstall",
    );
    assert_eq!(tree(&dest), Vec::<String>::new(), "left behind");
}

#[test]
fn the_installed_config_checks_and_the_installed_unit_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("usr");
    let etc = dir.path().join("etc");
    ok(
        &make(
            dir.path(),
            &[
                "install".into(),
                format!("PREFIX={}", prefix.display()),
                format!("SYSCONFDIR={}", etc.display()),
            ],
        ),
        "make install",
    );
    let config = etc.join("incidentd/incidentd.toml");
    let out = Command::new(prefix.join("bin/incidentd"))
        .arg("--check-config")
        .arg(&config)
        .output()
        .unwrap();
    ok(&out, "incidentd --check-config on the installed config");
    let unit = prefix.join("lib/systemd/system/incidentd.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains(&format!(
            "ExecStart={}/bin/incidentd --config {}",
            prefix.display(),
            config.display()
        )),
        "{text}"
    );
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify said:\n{said}"
    );
}
