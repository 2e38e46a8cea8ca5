//! The README's standalone quickstart ("Standalone, next to a backend in any language"), executed
//! as the README writes it, so the test fails when the README, `examples/backend.py` or
//! `examples/standalone.toml` drift apart.
//!
//! The shell block is read from README.md and run line by line with `bash`, with the `wsguard`
//! under test first on `PATH`:
//! - `export ...`: the variables it sets (`WSGUARD_*`) are kept for every later line;
//! - `NAME=$(...)`: the output becomes the variable `NAME`;
//! - `... &`: started in the background (`bash -c 'exec ...'`, so the PID is the program's own),
//!   then every listener of the quickstart must accept connections before the next line;
//! - `wsguard connect ...` with the JSON lines after it: a real WebSocket session; each frame must
//!   be answered without an error, and the `# <- {...}` line is the exact expected reply;
//! - any other line must exit 0; `wsguard api publish` must reach the session, `wsguard api
//!   sessions` must list its user, and `wsguard api revoke` must close it with the code and name
//!   the line's comment gives, which docs/PROTOCOL.md must document.
//!
//! The README's fixed ports (8000, 8080, 8081) and the admin listener's default are replaced by
//! free loopback ports, the same way in the README's lines and in the configuration, which is
//! `wsguard check-config`'s effective configuration of `examples/standalone.toml` (so defaults
//! such as `server.listen` are remapped too). Every wait is bounded; every process is stopped by
//! its PID.
#![allow(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_wsguard");
/// The heading of the README section whose first `sh` block is the quickstart.
const SECTION: &str = "### Standalone, next to a backend in any language";
const CONFIG: &str = "examples/standalone.toml";
const BACKEND: &str = "examples/backend.py";
/// The port `examples/backend.py` listens on without an argument (its docstring); checked below.
const BACKEND_DEFAULT_PORT: u16 = 8000;
/// The longest any one step may take.
const STEP: Duration = Duration::from_secs(10);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

/// One logical line of the quickstart block.
#[derive(Debug)]
struct Step {
    /// The command, continuation lines joined, trailing comment removed.
    command: String,
    /// The trailing comment, if any (`# ...` after the command).
    comment: String,
    /// For `wsguard connect`: the frames typed after it, and the `# <-` replies expected.
    frames: Vec<String>,
    expected: Vec<String>,
}

/// The first ```sh block after [`SECTION`].
fn quickstart_block(readme: &str) -> &str {
    let section = readme.split_once(SECTION).expect("README.md has the standalone quickstart section").1;
    let start = section.find("```sh\n").expect("the section has a ```sh block") + "```sh\n".len();
    let body = &section[start..];
    &body[..body.find("```").expect("the block is closed")]
}

/// Splits `text` at a trailing ` # comment` outside quotes.
fn split_comment(text: &str) -> (String, String) {
    let (mut single, mut double) = (false, false);
    let bytes = text.as_bytes();
    for (i, c) in text.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && (i == 0 || bytes[i - 1] == b' ') => {
                return (text[..i].trim().to_string(), text[i + 1..].trim().to_string());
            }
            _ => {}
        }
    }
    (text.trim().to_string(), String::new())
}

fn parse_steps(block: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut pending = String::new();
    for line in block.lines() {
        let trimmed = line.trim();
        if let Some(reply) = trimmed.strip_prefix("# <-") {
            let reply = reply.trim().split("   ").next().unwrap_or_default().to_string();
            steps.last_mut().expect("a reply follows a command").expected.push(reply);
            continue;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed.starts_with('{') {
            steps.last_mut().expect("a frame follows `wsguard connect`").frames.push(trimmed.to_string());
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (command, comment) = split_comment(&std::mem::take(&mut pending));
        steps.push(Step { command, comment, frames: Vec::new(), expected: Vec::new() });
    }
    assert!(pending.is_empty(), "the block ends inside a continued line");
    steps
}

/// Words of a shell command, with single and double quotes removed (no expansions).
fn shell_words(command: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut has_word) = (Vec::new(), String::new(), None, false);
    for c in command.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                has_word = true;
            }
            (Some(q), _) if c == q => quote = None,
            (None, ' ') => {
                if has_word {
                    words.push(std::mem::take(&mut word));
                    has_word = false;
                }
            }
            _ => {
                word.push(c);
                has_word = true;
            }
        }
    }
    if has_word {
        words.push(word);
    }
    words
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("address").port()
}

/// Every port of a `127.0.0.1:PORT` or `localhost:PORT` in `text`.
fn ports_in(text: &str) -> Vec<u16> {
    ["127.0.0.1:", "localhost:"]
        .iter()
        .flat_map(|host| text.match_indices(host).map(move |(i, _)| &text[i + host.len()..]))
        .filter_map(|rest| rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok())
        .collect()
}

/// Maps every port in `text` that has no free port yet to one.
fn map_ports(text: &str, ports: &mut BTreeMap<u16, u16>) {
    for port in ports_in(text) {
        ports.entry(port).or_insert_with(free_port);
    }
}

fn remap(text: &str, ports: &BTreeMap<u16, u16>) -> String {
    let mut text = text.to_string();
    for (from, to) in ports {
        for host in ["127.0.0.1:", "localhost:"] {
            // A port is followed by a non-digit (`/`, `"`, end of line): `:8080` never matches `:80800`.
            let mut out = String::with_capacity(text.len());
            let mut rest = text.as_str();
            let needle = format!("{host}{from}");
            while let Some(i) = rest.find(&needle) {
                let after = &rest[i + needle.len()..];
                out.push_str(&rest[..i]);
                if after.starts_with(|c: char| c.is_ascii_digit()) {
                    out.push_str(&needle);
                } else {
                    out.push_str(&format!("{host}{to}"));
                }
                rest = after;
            }
            out.push_str(rest);
            text = out;
        }
    }
    text
}

/// The processes the quickstart started; each is killed by its PID at the end.
#[derive(Default)]
struct Processes(Vec<(String, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Lines of a child's pipe, read on a thread.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// The first line within [`STEP`] for which `wanted` holds; panics with `what` and the lines seen
/// otherwise.
fn wait_line(rx: &Receiver<String>, what: &str, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + STEP;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if wanted(&line) => return line,
            Ok(line) => seen.push(line),
            Err(e) => panic!("{what}: not seen within {STEP:?} ({e}); instead:\n{}", seen.join("\n")),
        }
    }
}

/// The shell every line runs in: the repository as working directory, the `wsguard` under test
/// first on `PATH`, and the variables the quickstart has set so far.
struct Shell {
    root: PathBuf,
    path: String,
    vars: HashMap<String, String>,
}

impl Shell {
    fn command(&self, script: &str) -> Command {
        let mut command = Command::new("bash");
        command.args(["-c", script]).current_dir(&self.root).env("PATH", &self.path).envs(&self.vars);
        command
    }

    /// Runs `script` to completion within [`STEP`]; returns its stdout, panics on failure.
    fn run(&self, script: &str) -> String {
        let mut child = self.command(script).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn bash");
        let (stdout, stderr) =
            (lines_of(child.stdout.take().expect("stdout")), lines_of(child.stderr.take().expect("stderr")));
        let deadline = Instant::now() + STEP;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`{script}` did not finish within {STEP:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let collect = |rx: Receiver<String>| {
            let mut text = String::new();
            while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
                text.push_str(&line);
                text.push('\n');
            }
            text
        };
        let (out, err) = (collect(stdout), collect(stderr));
        assert!(status.success(), "`{script}` failed ({status}):\n{out}{err}");
        out
    }
}

/// The `wsguard connect` session the quickstart opened.
struct Session {
    stdin: ChildStdin,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
}

impl Session {
    /// Sends the README's frames; each must be answered (same `id`) without an error, and the
    /// `# <-` lines are the exact replies expected, in order.
    fn type_frames(&mut self, step: &Step) {
        let mut expected = step.expected.iter();
        for frame in &step.frames {
            let sent: serde_json::Value = serde_json::from_str(frame).expect("the README's frame is JSON");
            writeln!(self.stdin, "{frame}").expect("type a frame");
            let id = sent["id"].clone();
            let reply = wait_line(&self.stdout, &format!("the reply to {frame}"), |line| {
                serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v["id"] == id)
            });
            let reply: serde_json::Value = serde_json::from_str(&reply).expect("JSON");
            assert_ne!(reply["type"], "error", "{frame} was answered with an error: {reply}");
            if sent["action"] == "rpc" {
                let want = expected.next().expect("the README shows the RPC's reply with `# <-`");
                let want: serde_json::Value = serde_json::from_str(want).expect("the `# <-` reply is JSON");
                assert_eq!(reply, want, "the RPC reply differs from the README");
            }
        }
        assert!(expected.next().is_none(), "a `# <-` reply has no RPC frame to answer it");
    }
}

/// The close code and name a comment such as "alice is closed with 4501 token_revoked" gives.
fn close_in(comment: &str) -> (u16, String) {
    let words: Vec<&str> = comment.split_whitespace().collect();
    let at = words.iter().position(|w| w.len() == 4 && w.parse::<u16>().is_ok()).expect("a close code in the comment");
    (words[at].parse().expect("code"), words.get(at + 1).expect("the code's name").to_string())
}

#[test]
fn readme_standalone_quickstart_works_as_written() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let steps = parse_steps(quickstart_block(&readme));
    let backend = std::fs::read_to_string(root.join(BACKEND)).expect("the backend example");
    assert!(
        backend.contains(&format!("else {BACKEND_DEFAULT_PORT}")),
        "{BACKEND} no longer defaults to port {BACKEND_DEFAULT_PORT}; update this test"
    );

    let bin_dir = Path::new(BIN).parent().expect("the binary's directory");
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut shell = Shell { root: root.clone(), path, vars: HashMap::new() };
    let dir = std::env::temp_dir().join(format!("wsguard-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let config = dir.join("standalone.toml");

    let mut ports = BTreeMap::new();
    ports.insert(BACKEND_DEFAULT_PORT, free_port());
    let mut processes = Processes::default();
    let mut session: Option<Session> = None;
    let mut seen = Vec::new();
    let mut waiting_for_listeners = false;

    for step in &steps {
        let is_export = step.command.starts_with("export ");
        if !is_export && !config.exists() {
            // The first line after the environment is set: the effective configuration, its
            // listeners on free ports.
            let effective = shell.run(&format!("wsguard check-config {CONFIG}"));
            map_ports(&effective, &mut ports);
            for step in &steps {
                map_ports(&step.command, &mut ports);
            }
            std::fs::write(&config, remap(&effective, &ports)).expect("write the config");
            for value in shell.vars.values_mut() {
                *value = remap(value, &ports);
            }
        }
        let command = remap(&step.command, &ports).replace(CONFIG, &config.display().to_string());
        let words = shell_words(&command);
        if waiting_for_listeners && !command.ends_with('&') {
            // The listeners the README's user reaches: the backend and every address in its lines.
            let mut reached: Vec<u16> = steps.iter().flat_map(|s| ports_in(&s.command)).collect();
            reached.push(BACKEND_DEFAULT_PORT);
            let reached: Vec<u16> = reached.iter().map(|p| ports[p]).collect();
            wait_for_listeners(&reached, &mut processes, &dir);
            waiting_for_listeners = false;
        }

        if is_export {
            let names: Vec<&str> = words[1..].iter().filter_map(|w| w.split_once('=').map(|(n, _)| n)).collect();
            let printed = shell.run(&format!("{command}\nenv -0"));
            for (name, value) in printed.split('\0').filter_map(|kv| kv.split_once('=')) {
                if names.contains(&name) {
                    shell.vars.insert(name.to_string(), value.to_string());
                }
            }
            assert_eq!(shell.vars.len(), names.len(), "`{command}` did not set {names:?}");
            seen.push("export");
        } else if let Some(background) = command.strip_suffix('&') {
            let mut background = background.trim().to_string();
            if background.contains(BACKEND) {
                background.push_str(&format!(" {}", ports[&BACKEND_DEFAULT_PORT]));
                seen.push("backend");
            } else if background.starts_with("wsguard serve") {
                seen.push("serve");
            }
            let log =
                std::fs::File::create(dir.join(format!("background-{}.log", processes.0.len()))).expect("a log file");
            let child = shell
                .command(&format!("exec {background}"))
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start a background command");
            processes.0.push((background, child));
            waiting_for_listeners = true;
        } else if let Some((name, inner)) =
            command.split_once("=$(").filter(|(n, _)| n.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        {
            let inner = inner.strip_suffix(')').expect("`NAME=$(...)` ends with `)`");
            let value = shell.run(inner).trim().to_string();
            assert!(!value.is_empty(), "`{inner}` printed nothing");
            shell.vars.insert(name.to_string(), value);
        } else if words.len() > 1 && words[0] == "wsguard" && words[1] == "connect" {
            let mut child = shell
                .command(&format!("exec {command}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start wsguard connect");
            let mut opened = Session {
                stdin: child.stdin.take().expect("stdin"),
                stdout: lines_of(child.stdout.take().expect("stdout")),
                stderr: lines_of(child.stderr.take().expect("stderr")),
            };
            processes.0.push((command.clone(), child));
            wait_line(&opened.stderr, "`wsguard connect` connected", |l| l.starts_with("connected"));
            opened.type_frames(step);
            session = Some(opened);
            seen.push("connect");
        } else {
            let out = shell.run(&command);
            let api_call = words.get(..3).map(|w| w.join(" "));
            let session = || session.as_ref().expect("`wsguard connect` comes before the API calls");
            match api_call.as_deref() {
                Some("wsguard api publish") => {
                    let (channel, payload) = (&words[3], &words[4]);
                    let payload: serde_json::Value = serde_json::from_str(payload).expect("the payload is JSON");
                    wait_line(&session().stdout, "the published message at the session", |line| {
                        serde_json::from_str::<serde_json::Value>(line).is_ok_and(|m| {
                            m["type"] == "message" && m["channel"] == channel.as_str() && m["payload"] == payload
                        })
                    });
                    seen.push("publish");
                }
                Some("wsguard api sessions") => {
                    let user = &words[words.iter().position(|w| w == "--user").expect("--user") + 1];
                    assert!(out.contains(user.as_str()), "`{command}` does not list {user}:\n{out}");
                    seen.push("sessions");
                }
                Some("wsguard api revoke") => {
                    let (code, name) = close_in(&step.comment);
                    let protocol = std::fs::read_to_string(root.join("docs/PROTOCOL.md")).expect("PROTOCOL.md");
                    assert!(
                        protocol.lines().any(|l| l.starts_with(&format!("| {code} | `{name}` |"))),
                        "docs/PROTOCOL.md does not document close code {code} {name}"
                    );
                    let closed = wait_line(&session().stderr, "the session closed", |l| l.starts_with("closed"));
                    assert_eq!(closed, format!("closed: {code} {name}"));
                    seen.push("revoke");
                }
                _ if words.first().map(String::as_str) == Some("curl") => {
                    let answer: serde_json::Value = serde_json::from_str(out.trim())
                        .unwrap_or_else(|e| panic!("`{command}` answered {out:?}: {e}"));
                    assert!(answer.get("error").is_none() && answer.get("code").is_none(), "{answer}");
                    seen.push("curl");
                }
                _ => {}
            }
        }
    }
    // What this test exists to see: a backend, the server, a session answered by the backend,
    // the API reaching it and revoking it.
    for wanted in ["export", "backend", "serve", "connect", "publish", "sessions", "revoke"] {
        assert!(seen.contains(&wanted), "the README's quickstart no longer has the `{wanted}` step: {seen:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until every remapped port accepts connections; a background process that exits first
/// fails the test with its stderr.
fn wait_for_listeners(ports: &[u16], processes: &mut Processes, dir: &Path) {
    let deadline = Instant::now() + STEP;
    for port in ports {
        while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
            for (i, (command, child)) in processes.0.iter_mut().enumerate() {
                if let Some(status) = child.try_wait().expect("wait") {
                    let log = std::fs::read_to_string(dir.join(format!("background-{i}.log"))).unwrap_or_default();
                    panic!("`{command}` exited ({status}) before listening:\n{log}");
                }
            }
            assert!(Instant::now() < deadline, "nothing listens on 127.0.0.1:{port} after {STEP:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
