//! Retries and dead letters (protocol.md §7): tube settings, attempt counting, automatic
//! dead-lettering, the dead-letter commands, and the `larder tube` / `larder dlq` commands.

use larder::config::ServerConfig;

use crate::support::{InProcess, Raw};

/// Sends `send` and asserts the server answers exactly `expect`.
async fn step(c: &mut Raw, send: &str, expect: &str) {
    c.send(send.as_bytes()).await;
    let got = c.read_exact(expect.len()).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        expect,
        "after sending {send:?}"
    );
}

/// The value of `key` in a YAML reply.
fn field(reply: &str, key: &str) -> String {
    let yaml = reply.split_once("\r\n").map(|(_, y)| y).unwrap_or_default();
    larder::client::parse_yaml_map(yaml.as_bytes())
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no field {key} in {reply:?}"))
}

/// A fresh data directory path for a test that restarts its server.
fn data_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("larder-retries-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

mod config_tube {
    use super::*;

    #[tokio::test]
    async fn settings_are_set_shown_reset_and_refused_precisely() {
        let s = InProcess::start().await;
        let mut c = s.connect().await;
        // A setting creates the tube and keeps it alive with nobody using it.
        step(
            &mut c,
            "config-tube mail max-attempts 3\r\n",
            "CONFIGURED\r\n",
        )
        .await;
        step(
            &mut c,
            "config-tube mail retry-delay 1500\r\n",
            "CONFIGURED\r\n",
        )
        .await;
        step(
            &mut c,
            "config-tube mail retry-backoff 1.5\r\n",
            "CONFIGURED\r\n",
        )
        .await;
        step(
            &mut c,
            "config-tube mail retry-jitter 0.25\r\n",
            "CONFIGURED\r\n",
        )
        .await;
        let st = c.cmd("stats-tube mail\r\n").await;
        assert_eq!(field(&st, "max-attempts"), "3");
        assert_eq!(field(&st, "retry-delay"), "1500");
        assert_eq!(field(&st, "retry-backoff"), "1.5");
        assert_eq!(field(&st, "retry-max"), "0");
        assert_eq!(field(&st, "retry-jitter"), "0.25");
        let tubes = c.cmd("list-tubes\r\n").await;
        assert!(tubes.contains("- mail\n"), "{tubes}");

        // Refusals change nothing.
        step(
            &mut c,
            "config-tube mail colour 3\r\n",
            "UNKNOWN_SETTING\r\n",
        )
        .await;
        step(
            &mut c,
            "config-tube mail max-attempts x\r\n",
            "BAD_FORMAT\r\n",
        )
        .await;
        step(
            &mut c,
            "config-tube mail retry-jitter 2\r\n",
            "BAD_FORMAT\r\n",
        )
        .await;
        step(
            &mut c,
            "config-tube mail max-attempts  3\r\n",
            "BAD_FORMAT\r\n",
        )
        .await;
        let st = c.cmd("stats-tube mail\r\n").await;
        assert_eq!(field(&st, "max-attempts"), "3");
        assert_eq!(field(&st, "retry-jitter"), "0.25");

        // `default` returns each setting to the server default; with none left, the tube
        // goes away like any unused tube.
        for setting in [
            "max-attempts",
            "retry-delay",
            "retry-backoff",
            "retry-jitter",
        ] {
            step(
                &mut c,
                &format!("config-tube mail {setting} default\r\n"),
                "CONFIGURED\r\n",
            )
            .await;
        }
        step(&mut c, "stats-tube mail\r\n", "NOT_FOUND\r\n").await;
    }

    #[tokio::test]
    async fn settings_survive_a_restart() {
        let dir = data_dir("config");
        let config = ServerConfig {
            data_dir: dir.clone(),
            ..ServerConfig::default()
        };
        let s = InProcess::with_config(config.clone()).await;
        let mut c = s.connect().await;
        step(
            &mut c,
            "config-tube mail max-attempts 7\r\n",
            "CONFIGURED\r\n",
        )
        .await;
        step(
            &mut c,
            "config-tube mail retry-max 60000\r\n",
            "CONFIGURED\r\n",
        )
        .await;
        step(
            &mut c,
            "config-tube mail retry-max default\r\n",
            "CONFIGURED\r\n",
        )
        .await;
        step(
            &mut c,
            "config-tube other retry-delay 5\r\n",
            "CONFIGURED\r\n",
        )
        .await;
        c.close().await;
        s.shutdown().await.expect("shutdown");

        let s = InProcess::with_config(config).await;
        let mut c = s.connect().await;
        let st = c.cmd("stats-tube mail\r\n").await;
        assert_eq!(field(&st, "max-attempts"), "7");
        assert_eq!(field(&st, "retry-max"), "0");
        assert_eq!(field(&st, "retry-delay"), "0");
        let st = c.cmd("stats-tube other\r\n").await;
        assert_eq!(field(&st, "retry-delay"), "5");
        c.close().await;
        s.shutdown().await.expect("shutdown");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
