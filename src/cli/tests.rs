//! Tests of the command line: flag parsing, defaults and validation.

use super::*;

fn serve_config(args: &[&str]) -> ServerConfig {
    let cli = Cli::try_parse_from(["larder", "serve"].iter().chain(args)).expect("parse");
    match cli.command {
        Cmd::Serve(args) => args.config().expect("valid config"),
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn a_job_size_the_log_cannot_hold_is_refused() {
    let parse = |z: &str| {
        let cli = Cli::try_parse_from(["larder", "serve", "-z", z]).expect("parse");
        match cli.command {
            Cmd::Serve(args) => args.config().map(|c| c.max_job_size),
            other => panic!("parsed as {other:?}"),
        }
    };
    assert_eq!(
        parse(&MAX_JOB_SIZE_LIMIT.to_string()).ok(),
        Some(MAX_JOB_SIZE_LIMIT)
    );
    let err = parse("100000000").expect_err("too big").to_string();
    assert!(err.contains("--max-job-size"), "{err}");
    assert!(err.contains(&MAX_JOB_SIZE_LIMIT.to_string()), "{err}");
    assert!(parse("0").is_err());
}

#[test]
fn limit_flags_reach_the_server_config() {
    let config = serve_config(&[
        "--max-jobs",
        "5",
        "--max-bytes",
        "6",
        "--max-tube-jobs",
        "7",
        "--max-tube-bytes",
        "8",
        "--max-connections",
        "9",
        "--max-output-per-connection",
        "10",
        "--output-stall-timeout",
        "11",
        "--min-free-disk",
        "12",
        "--max-tubes",
        "13",
        "--max-watches-per-connection",
        "14",
    ]);
    assert_eq!(
        config.limits,
        Limits {
            max_jobs: 5,
            max_bytes: 6,
            max_connections: 9,
            max_output_per_connection: 10,
            output_stall_timeout: 11,
            min_free_disk: 12,
            max_tubes: 13,
            max_watches_per_connection: 14,
        }
    );
    let d = config.setting_defaults;
    assert_eq!(d.get(TubeSetting::MaxTubeJobs), 7);
    assert_eq!(d.get(TubeSetting::MaxTubeBytes), 8);
}

#[test]
fn beanstalkd_flags_reach_the_server_config() {
    let config = serve_config(&["-s", "8192", "-u", "nobody", "-n"]);
    assert_eq!(config.segment_size, 8192);
    assert_eq!(config.user.as_deref(), Some("nobody"));
    assert!(!config.compaction);
    assert!(serve_config(&["-n", "-c"]).compaction);
    assert!(!serve_config(&["-c", "-n"]).compaction);
    assert!(serve_config(&[]).compaction);
    assert_eq!(serve_config(&["-f", "0"]).fsync, FsyncPolicy::Always);
    assert_eq!(verbosity_filter(0), None);
    assert_eq!(verbosity_filter(1), Some("debug"));
    assert_eq!(verbosity_filter(3), Some("trace"));
}

#[test]
fn size_and_duration_flags_take_units() {
    let config = serve_config(&[
        "--max-bytes",
        "1GiB",
        "-z",
        "64KiB",
        "--wal-segment-size",
        "1MiB",
        "--output-stall-timeout",
        "2m",
        "--min-free-disk",
        "1GB",
        "--retry-delay",
        "5s",
    ]);
    assert_eq!(config.limits.max_bytes, 1 << 30);
    assert_eq!(config.max_job_size, 64 << 10);
    assert_eq!(config.segment_size, 1 << 20);
    assert_eq!(config.limits.output_stall_timeout, 120);
    assert_eq!(config.limits.min_free_disk, 1_000_000_000);
    assert_eq!(config.setting_defaults.get(TubeSetting::RetryDelay), 5000);
    // beanstalkd's meaning stays: -z in bytes, stall timeout in seconds.
    let config = serve_config(&["-z", "1000", "--output-stall-timeout", "7"]);
    assert_eq!(config.max_job_size, 1000);
    assert_eq!(config.limits.output_stall_timeout, 7);
}

#[test]
fn a_duration_without_a_unit_is_refused_where_beanstalkd_defines_none() {
    let cli = Cli::try_parse_from(["larder", "serve", "--retry-delay", "5"]).expect("parse");
    let Cmd::Serve(args) = cli.command else {
        panic!("not serve")
    };
    let err = args.config().expect_err("no unit").to_string();
    assert!(err.contains("5s") && err.contains("5ms"), "{err}");
    assert!(Cli::try_parse_from(["larder", "serve", "--max-bytes", "lots"]).is_err());
    let put =
        Cli::try_parse_from(["larder", "put", "--delay", "2s", "--ttr", "2m", "x"]).expect("parse");
    match put.command {
        Cmd::Put(p) => assert_eq!((p.delay, p.ttr), (2, 120)),
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn limits_default_to_the_documented_values() {
    let config = serve_config(&[]);
    assert_eq!(config.limits, Limits::DEFAULT);
    assert_eq!(config.setting_defaults.get(TubeSetting::MaxTubeJobs), 0);
    assert_eq!(config.setting_defaults.get(TubeSetting::MaxTubeBytes), 0);
}

#[test]
fn cluster_tls_flags_go_together_and_only_in_cluster_mode() {
    let cluster = [
        "--node-id",
        "1",
        "--cluster-listen",
        "127.0.0.1:7001",
        "--peer",
        "2=127.0.0.1:7002",
    ];
    let tls = [
        "--cluster-tls-cert",
        "n1.pem",
        "--cluster-tls-key",
        "n1.key",
        "--cluster-tls-ca",
        "ca.pem",
    ];
    let all: Vec<&str> = cluster.iter().chain(&tls).copied().collect();
    let files = serve_config(&all)
        .cluster
        .and_then(|c| c.tls)
        .expect("cluster TLS files");
    assert_eq!(
        (files.cert.to_str(), files.key.to_str(), files.ca.to_str()),
        (Some("n1.pem"), Some("n1.key"), Some("ca.pem"))
    );
    assert_eq!(
        serve_config(&cluster).cluster.map(|c| c.tls),
        Some(None),
        "plain TCP without the flags"
    );
    let refused = |args: &[&str]| {
        let cli = Cli::try_parse_from(["larder", "serve"].iter().chain(args)).expect("parse");
        match cli.command {
            Cmd::Serve(args) => args.config().expect_err("refused").to_string(),
            other => panic!("parsed as {other:?}"),
        }
    };
    let err = refused(&tls);
    assert!(err.contains("are for cluster mode (--node-id"), "{err}");
    let err = refused(&[&cluster[..], &tls[..2]].concat());
    assert!(
        err.contains("go together: --cluster-tls-key and --cluster-tls-ca missing"),
        "{err}"
    );
    let err = refused(&[&cluster[..], &tls[2..]].concat());
    assert!(
        err.contains("go together: --cluster-tls-cert missing"),
        "{err}"
    );
}
