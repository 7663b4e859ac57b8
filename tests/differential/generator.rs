//! Seeded random command sequences over one to three connections.
//!
//! The generator tracks just enough state to stay deterministic: each connection's used
//! tube and watch list, which tubes are paused, and how many ids have been handed out.
//! With that it only emits a plain (blocking) `reserve` right after a put into a watched,
//! unpaused tube on the same connection, so a job is always ready for it.

use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::harness::{Expect, Step};

/// Largest job body the servers accept in random runs (`-z` / `--max-job-size`).
pub const MAX_JOB_SIZE: u32 = 64;

/// Tubes the sequences use. `default` included; names exercise every allowed character.
const TUBES: &[&str] = &["default", "a", "b+c/d;e.f$g_h(i)", "Z-9"];

/// Per-connection state the generator knows for sure.
#[derive(Clone)]
struct ConnState {
    using: String,
    watching: Vec<String>,
}

impl ConnState {
    fn fresh() -> ConnState {
        ConnState {
            using: "default".to_owned(),
            watching: vec!["default".to_owned()],
        }
    }
}

struct Gen {
    rng: StdRng,
    conns: Vec<ConnState>,
    paused: HashSet<String>,
    /// Ids beanstalkd has assigned so far (including those of puts whose body lacked its
    /// CRLF: beanstalkd creates the job before reading the body).
    ids: u64,
    steps: Vec<Step>,
}

/// The steps of the sequence with this seed, about `len` commands long.
pub fn sequence(seed: u64, len: usize) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let nconns = rng.gen_range(1..=3);
    let mut g = Gen {
        rng,
        conns: vec![ConnState::fresh(); nconns],
        paused: HashSet::new(),
        ids: 0,
        steps: Vec::new(),
    };
    while g.steps.len() < len {
        let c = g.rng.gen_range(0..nconns);
        if g.rng.gen_ratio(1, 12) {
            g.pipelined(c);
        } else {
            let cmd = g.command(c);
            g.push(c, cmd);
        }
    }
    g.steps
}

/// One generated command: its bytes and what it gets back.
struct Cmd {
    bytes: Vec<u8>,
    expect: Expect,
}

impl Cmd {
    fn line(text: String) -> Cmd {
        Cmd {
            bytes: format!("{text}\r\n").into_bytes(),
            expect: Expect::n(1),
        }
    }
}

impl Gen {
    fn push(&mut self, c: usize, cmd: Cmd) {
        self.steps.push(Step {
            conn: c,
            bytes: cmd.bytes,
            expect: cmd.expect,
        });
    }

    /// A `pause-tube` of `tube`: half the time a zero pause, which ends any pause at once
    /// (so the very next command, even pipelined, finds the tube unpaused), otherwise a
    /// long one (a short one would end at a time-dependent point).
    fn pause(&mut self, tube: String) -> String {
        if self.rng.gen_ratio(1, 2) {
            self.paused.remove(&tube);
            format!("pause-tube {tube} 0")
        } else {
            let line = format!("pause-tube {tube} 1000");
            self.paused.insert(tube);
            line
        }
    }

    /// Several commands for one connection in one write; a third of them start by
    /// unpausing a tube with a zero pause, or pausing one, so the commands behind it
    /// run right after the change.
    fn pipelined(&mut self, c: usize) {
        let k = self.rng.gen_range(2..=4);
        let mut bytes = Vec::new();
        let mut expect = Expect::n(0);
        if self.rng.gen_ratio(1, 3) {
            let tube = if self.rng.gen_ratio(2, 3) {
                self.paused.iter().min().cloned()
            } else {
                None
            };
            let tube = tube.unwrap_or_else(|| self.tube());
            let line = self.pause(tube);
            bytes.extend_from_slice(format!("{line}\r\n").as_bytes());
            expect.replies += 1;
        }
        for _ in 0..k {
            let cmd = self.command(c);
            bytes.extend_from_slice(&cmd.bytes);
            expect.replies += cmd.expect.replies;
            if cmd.expect.close {
                expect.close = true;
                break;
            }
        }
        self.steps.push(Step {
            conn: c,
            bytes,
            expect,
        });
    }

    /// A job id: mostly one that exists or recently did, sometimes odd ones.
    fn id(&mut self) -> String {
        match self.rng.gen_range(0..20) {
            0 => "0".to_owned(),
            1 => "18446744073709551615".to_owned(),
            2 => self.rng.gen_range(1..=10u64).to_string(),
            _ => self.rng.gen_range(1..=self.ids.max(1) + 1).to_string(),
        }
    }

    fn pri(&mut self) -> String {
        let v: u32 = match self.rng.gen_range(0..8) {
            0 => 0,
            1 => 1023,
            2 => 1024,
            3 => u32::MAX,
            _ => self.rng.gen_range(0..4),
        };
        v.to_string()
    }

    fn tube(&mut self) -> String {
        (*TUBES.choose(&mut self.rng).expect("tubes")).to_owned()
    }

    /// Random body bytes, biased towards CR, LF, NUL and spaces.
    fn body(&mut self) -> Vec<u8> {
        let len = match self.rng.gen_range(0..30) {
            0 => self.rng.gen_range(MAX_JOB_SIZE - 2..=MAX_JOB_SIZE + 2) as usize,
            1 => 0,
            _ => self.rng.gen_range(1..12),
        };
        (0..len)
            .map(|_| match self.rng.gen_range(0..10) {
                0 => b'\r',
                1 => b'\n',
                2 => 0,
                3 => b' ',
                4 => self.rng.gen(),
                _ => self.rng.gen_range(b'a'..=b'z'),
            })
            .collect()
    }

    fn command(&mut self, c: usize) -> Cmd {
        match self.rng.gen_range(0..100) {
            0..=17 => self.put(c),
            18..=19 => self.put_bad_crlf(),
            20..=27 => Cmd::line("reserve-with-timeout 0".to_owned()),
            28..=30 => Cmd::line(format!("reserve-job {}", self.id())),
            31..=37 => Cmd::line(format!("delete {}", self.id())),
            38..=41 => {
                let (id, pri) = (self.id(), self.pri());
                // A nonzero delay is long enough never to expire during a run.
                let delay = if self.rng.gen_ratio(1, 6) {
                    "1000"
                } else {
                    "0"
                };
                Cmd::line(format!("release {id} {pri} {delay}"))
            }
            42..=45 => {
                let (id, pri) = (self.id(), self.pri());
                Cmd::line(format!("bury {id} {pri}"))
            }
            46..=48 => Cmd::line(format!("touch {}", self.id())),
            49..=51 => {
                let n = *[0u32, 1, 1, 2, 3, 100].choose(&mut self.rng).expect("n");
                Cmd::line(format!("kick {n}"))
            }
            52..=54 => Cmd::line(format!("kick-job {}", self.id())),
            55..=58 => Cmd::line(format!("peek {}", self.id())),
            59..=60 => Cmd::line("peek-ready".to_owned()),
            61..=62 => Cmd::line("peek-delayed".to_owned()),
            63..=64 => Cmd::line("peek-buried".to_owned()),
            65..=67 => Cmd::line(format!("stats-job {}", self.id())),
            68..=69 => Cmd::line(format!("stats-tube {}", self.tube())),
            70 => Cmd::line("stats".to_owned()),
            71..=74 => {
                let t = self.tube();
                self.conns[c].using = t.clone();
                Cmd::line(format!("use {t}"))
            }
            75..=77 => {
                let t = self.tube();
                if !self.conns[c].watching.contains(&t) {
                    self.conns[c].watching.push(t.clone());
                }
                Cmd::line(format!("watch {t}"))
            }
            78..=80 => {
                let t = self.tube();
                let w = &mut self.conns[c].watching;
                if !(w.len() == 1 && w[0] == t) {
                    w.retain(|x| *x != t);
                }
                Cmd::line(format!("ignore {t}"))
            }
            81 => Cmd::line("list-tubes".to_owned()),
            82 => Cmd::line("list-tube-used".to_owned()),
            83 => Cmd::line("list-tubes-watched".to_owned()),
            84 => {
                let t = self.tube();
                Cmd::line(self.pause(t))
            }
            85 => {
                self.conns[c] = ConnState::fresh();
                Cmd {
                    bytes: b"quit\r\n".to_vec(),
                    expect: Expect {
                        replies: 0,
                        close: true,
                        settle: false,
                    },
                }
            }
            _ => self.malformed(),
        }
    }

    /// A valid put (possibly too big), sometimes followed by a `reserve` that is sure to
    /// find a ready job.
    fn put(&mut self, c: usize) -> Cmd {
        let pri = self.pri();
        let delay = if self.rng.gen_ratio(1, 8) {
            "1000"
        } else {
            "0"
        };
        let ttr = *[10u32, 60, 120, 3600, u32::MAX]
            .choose(&mut self.rng)
            .expect("ttr");
        let body = self.body();
        let mut bytes = format!("put {pri} {delay} {ttr} {}\r\n", body.len()).into_bytes();
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(b"\r\n");
        let mut expect = Expect::n(1);
        let fits = body.len() <= MAX_JOB_SIZE as usize;
        if fits {
            self.ids += 1;
        }
        let state = &self.conns[c];
        if fits
            && delay == "0"
            && state.watching.contains(&state.using)
            && !self.paused.contains(&state.using)
            && self.rng.gen_ratio(1, 3)
        {
            bytes.extend_from_slice(b"reserve\r\n");
            expect.replies += 1;
        }
        Cmd { bytes, expect }
    }

    /// A put whose body is not followed by `\r\n`.
    fn put_bad_crlf(&mut self) -> Cmd {
        let mut body = self.body();
        body.truncate(MAX_JOB_SIZE as usize);
        let mut bytes = format!("put 0 0 10 {}\r\n", body.len()).into_bytes();
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(
            *[b"XY", b"\n\r", b"\r\r", b"\0\n"]
                .choose(&mut self.rng)
                .expect("tail"),
        );
        self.ids += 1;
        Cmd {
            bytes,
            expect: Expect::n(1),
        }
    }

    /// A malformed command line that gets exactly one reply and changes nothing.
    fn malformed(&mut self) -> Cmd {
        // Lines that are well-formed but for one defect. Puts never get a body, so a put
        // line must be rejected before its size is believed (size <= the limit).
        if self.rng.gen_ratio(1, 10) {
            let line = *[
                "put 1 0 10 3 x",
                "put 1 0 10 3 ",
                "put 1 0 10 3x",
                "put 1 0 10",
                "put 1 0 x 3",
                "put -1 0 10 3",
                "put 1 0 10 4294967296",
                "put 4294967296 0 10 3",
                " put 1 0 10 3",
                "put\t1 0 10 3",
                "put 1 0 10 3\0",
                "put 1 0 10 +3",
            ]
            .choose(&mut self.rng)
            .expect("put");
            return Cmd::line(line.to_owned());
        }
        // reserve-with-timeout is parsed like C's strtol in beanstalkd 1.12; these oddities
        // all mean a timeout of 0 (negative ones would block forever, so are left out).
        if self.rng.gen_ratio(1, 20) {
            let arg = *["", "x", "+0", "-0", "4294967296", " 0 junk", "\t0", "00"]
                .choose(&mut self.rng)
                .expect("timeout");
            return Cmd::line(format!("reserve-with-timeout {arg}"));
        }
        let valid = [
            format!("reserve-job {}", self.id()),
            format!("delete {}", self.id()),
            format!("release {} 1 0", self.id()),
            format!("bury {} 1", self.id()),
            format!("touch {}", self.id()),
            "kick 1".to_owned(),
            format!("kick-job {}", self.id()),
            format!("peek {}", self.id()),
            "peek-ready".to_owned(),
            "peek-delayed".to_owned(),
            "peek-buried".to_owned(),
            format!("stats-job {}", self.id()),
            format!("stats-tube {}", self.tube()),
            "stats".to_owned(),
            format!("use {}", self.tube()),
            format!("watch {}", self.tube()),
            format!("ignore {}", self.tube()),
            "list-tubes".to_owned(),
            "list-tube-used".to_owned(),
            "list-tubes-watched".to_owned(),
            format!("pause-tube {} 1000", self.tube()),
        ];
        let base = valid.choose(&mut self.rng).expect("valid").clone();
        let words: Vec<&str> = base.split(' ').collect();
        let line: Vec<u8> = match self.rng.gen_range(0..12) {
            // Unknown command words.
            0 => [
                &b"frob"[..],
                b"PEEK 1",
                b"Stats",
                b"reserve-jobs 1",
                b"list",
                b"kick-jobs 1",
                b"",
            ]
            .choose(&mut self.rng)
            .expect("unknown")
            .to_vec(),
            // A trailing space.
            1 => format!("{base} ").into_bytes(),
            // A leading space.
            2 => format!(" {base}").into_bytes(),
            // A missing argument.
            3 if words.len() > 1 => words[..words.len() - 1].join(" ").into_bytes(),
            // An extra argument.
            4 => format!("{base} 7").into_bytes(),
            // A non-digit or overflowing number in place of the last argument.
            5 if words.len() > 1 => {
                // Tube commands take any name, so only names that are invalid; a timeout
                // must not turn into a real (nonzero) one.
                let choices: &[&str] = match words[0] {
                    "use" | "watch" | "ignore" | "stats-tube" => &["-1", ""],
                    "reserve-with-timeout" => &["x", "-1", "4294967296", ""],
                    _ => &[
                        "x",
                        "-1",
                        "+1",
                        "1x",
                        "4294967296",
                        "18446744073709551616",
                        "",
                    ],
                };
                let bad = *choices.choose(&mut self.rng).expect("bad");
                let mut w = words.clone();
                *w.last_mut().expect("last") = bad;
                w.join(" ").into_bytes()
            }
            // A NUL byte somewhere.
            6 => {
                let mut b = base.clone().into_bytes();
                let at = self.rng.gen_range(0..=b.len());
                b.insert(at, 0);
                b
            }
            // A bad tube name.
            7 => {
                let cmd = *["use", "watch", "ignore", "stats-tube", "pause-tube"]
                    .choose(&mut self.rng)
                    .expect("cmd");
                let name = match self.rng.gen_range(0..5) {
                    0 => "a".repeat(201),
                    1 => "-a".to_owned(),
                    2 => "a*b".to_owned(),
                    3 => "é".to_owned(),
                    _ => "a b".to_owned(),
                };
                let tail = if cmd == "pause-tube" { " 1000" } else { "" };
                format!("{cmd} {name}{tail}").into_bytes()
            }
            // A tab instead of a space.
            8 => base.replacen(' ', "\t", 1).into_bytes(),
            // An over-long line (never 225 + 224k bytes, where beanstalkd splits the CRLF
            // across two reads and swallows the next command).
            9 => {
                let len = *[225usize - 1, 226, 300, 1000]
                    .choose(&mut self.rng)
                    .expect("len");
                let mut b = format!("{base} ").into_bytes();
                b.resize(len - 2, b'a');
                b
            }
            // Long but valid-length names: 200 is fine, so use it in a bad spot.
            10 => format!("peek {}", "1".repeat(200)).into_bytes(),
            // A stray character at the end ('*' is never part of a tube name).
            _ => format!("{base}*").into_bytes(),
        };
        let mut bytes = line;
        // A line starting with "quit" closes the connection; never produced here, but keep
        // the generator honest.
        assert!(!bytes.starts_with(b"quit"));
        bytes.extend_from_slice(b"\r\n");
        Cmd {
            bytes,
            expect: Expect::n(1),
        }
    }
}
