//! `berth build --progress tty`: BuildKit-style progress on a terminal. Each step is a line
//! with its state and time under a `[+] Building 3.2s (4/7)` header, repainted in place
//! (cursor up, erase) on every event and on a tick while steps run; a running step shows the
//! last lines of its output under it. At the end the final state is printed once more and a
//! failed step's whole output follows.
//!
//! [`Board`] (the steps' states and what a frame holds) is pure: time comes in as the time
//! since the build started and the terminal's size as numbers, so it is tested without a
//! terminal. [`Tty`] writes frames to stderr.
//!
//! Written here rather than on indicatif (which `berth pull` uses): its bars are one line
//! each with no room for an output tail that collapses, and a frame as a plain list of lines
//! is what the tests check; `console` (indicatif's own, already in the tree) measures and cuts
//! lines to the terminal's width.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use berth_proto::berth::services::builds::v1 as pb;

/// Output lines shown under a running step.
const TAIL_LINES: usize = 6;
/// A step's output kept for the error report; past this the oldest bytes go.
const KEEP_OUTPUT: usize = 4 << 20;
/// Width when the terminal tells none (script(1) with no terminal of its own gives 0x0).
const DEFAULT_WIDTH: usize = 80;

/// Where a step is.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Started, not done.
    Running,
    /// Done in this many seconds (berthd's count).
    Done(f64),
    /// Taken from the cache.
    Cached,
    /// The step the build failed on, after this many seconds.
    Error(f64),
    /// Still running when another step failed.
    Canceled(f64),
}

/// One step of the build.
#[derive(Debug, Clone)]
pub struct Step {
    /// As berthd names it: `[stage-0 2/3] RUN make`.
    pub label: String,
    /// Its state.
    pub state: State,
    /// When it started, since the build's start.
    started: Duration,
    /// Its output (RUN's stdout and stderr as they came), at most [`KEEP_OUTPUT`] bytes.
    output: Vec<u8>,
    /// Bytes of output dropped from the front.
    dropped: usize,
}

impl Step {
    fn new(label: &str, state: State, now: Duration) -> Step {
        Step {
            label: label.to_string(),
            state,
            started: now,
            output: Vec::new(),
            dropped: 0,
        }
    }

    fn push_output(&mut self, data: &[u8]) {
        self.output.extend_from_slice(data);
        // Drop in big pieces so that a chatty step is not a copy per event.
        if self.output.len() > 2 * KEEP_OUTPUT {
            let cut = self.output.len() - KEEP_OUTPUT;
            self.output.drain(..cut);
            self.dropped += cut;
        }
    }

    /// The last `n` non-blank lines of output as a terminal would show them: a line ends at
    /// `\n`, a `\r` restarts it, escape sequences and other control characters go.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let from = self.output.len().saturating_sub(16 << 10);
        let text = String::from_utf8_lossy(&self.output[from..]);
        let mut lines: Vec<String> = text
            .split('\n')
            .rev()
            .map(|l| {
                let l = l.trim_end_matches('\r');
                let l = l.rsplit('\r').next().unwrap_or(l);
                console::strip_ansi_codes(l)
                    .chars()
                    .map(|c| if c == '\t' { ' ' } else { c })
                    .filter(|c| !c.is_control())
                    .collect::<String>()
            })
            .filter(|l| !l.trim().is_empty())
            .take(n)
            .collect();
        lines.reverse();
        lines
    }
}

/// The build's steps in the order they were first heard of (so parallel stages' steps sit
/// side by side), and lines to print once above the display.
#[derive(Debug, Default)]
pub struct Board {
    /// The steps.
    pub steps: Vec<Step>,
    /// Each stage's step count, from the labels (`[NAME k/N]`).
    stages: BTreeMap<String, usize>,
    /// Warnings not printed yet.
    pending: Vec<String>,
    /// The build failed.
    failed: bool,
}

/// `NAME` and `N` of a label `[NAME k/N] ...`.
fn stage_of(label: &str) -> Option<(&str, usize)> {
    let inner = label.strip_prefix('[')?.split_once(']')?.0;
    let (name, count) = inner.rsplit_once(' ')?;
    let total = count.split_once('/')?.1.parse().ok()?;
    Some((name, total))
}

/// `1.2s`.
fn secs(s: f64) -> String {
    format!("{:.1}s", s.max(0.0))
}

impl Board {
    fn find(&mut self, label: &str) -> Option<&mut Step> {
        self.steps.iter_mut().rev().find(|s| s.label == label)
    }

    fn add(&mut self, label: &str, state: State, now: Duration) -> &mut Step {
        if let Some((name, total)) = stage_of(label) {
            self.stages.insert(name.to_string(), total);
        }
        self.steps.push(Step::new(label, state, now));
        let last = self.steps.len() - 1;
        &mut self.steps[last]
    }

    /// Takes one of berthd's events, `now` after the build's start.
    pub fn event(&mut self, e: &pb::BuildEvent, now: Duration) {
        use pb::build_event::Kind;
        match Kind::try_from(e.kind).unwrap_or(Kind::Warning) {
            Kind::Start => {
                self.add(&e.step, State::Running, now);
            }
            Kind::Cached => match self.find(&e.step) {
                Some(s) => s.state = State::Cached,
                None => {
                    self.add(&e.step, State::Cached, now);
                }
            },
            Kind::Output => match self.find(&e.step) {
                Some(s) => s.push_output(&e.data),
                None => self.add(&e.step, State::Running, now).push_output(&e.data),
            },
            Kind::Done => match self.find(&e.step) {
                Some(s) => s.state = State::Done(e.elapsed),
                None => {
                    self.add(&e.step, State::Done(e.elapsed), now);
                }
            },
            Kind::Warning => self.pending.push(e.message.clone()),
        }
    }

    /// The build failed with berthd's `message` (`step LABEL (Dockerfile line N): ...`): the
    /// step it names is the failed one (added if it failed before it started, as a COPY
    /// whose source is missing does; else the only running one), the others still running
    /// were cancelled.
    pub fn fail(&mut self, message: &str, now: Duration) {
        self.failed = true;
        let named = message
            .strip_prefix("step ")
            .and_then(|m| m.rsplit_once(" (Dockerfile line"))
            .map(|(label, _)| label.to_string());
        let running: Vec<usize> = (0..self.steps.len())
            .filter(|&i| self.steps[i].state == State::Running)
            .collect();
        let failed = match &named {
            Some(l) => running.iter().copied().find(|&i| &self.steps[i].label == l),
            None if running.len() == 1 => Some(running[0]),
            None => None,
        };
        for i in running {
            let took = now.saturating_sub(self.steps[i].started).as_secs_f64();
            self.steps[i].state = if Some(i) == failed {
                State::Error(took)
            } else {
                State::Canceled(took)
            };
        }
        if let (None, Some(l)) = (failed, named) {
            self.add(&l, State::Error(0.0), now);
        }
    }

    /// Whether a step runs (the display then moves on the tick).
    pub fn running(&self) -> bool {
        self.steps.iter().any(|s| s.state == State::Running)
    }

    /// Steps finished (done or cached) and steps known: each seen stage's count from its
    /// labels, or the steps seen if that is more.
    pub fn counts(&self) -> (usize, usize) {
        let finished = self
            .steps
            .iter()
            .filter(|s| matches!(s.state, State::Done(_) | State::Cached))
            .count();
        let known = self.stages.values().sum::<usize>().max(self.steps.len());
        (finished, known)
    }

    /// Warnings to print once, above the display.
    pub fn take_pending(&mut self) -> Vec<String> {
        std::mem::take(&mut self.pending)
    }

    /// The lines of a frame `now` after the start, each at most `width` columns. `last` is the
    /// final frame: no output tails, `FINISHED` in the header when all went well. At most
    /// `height - 1` lines unless `last` (the header and the latest steps): lines that
    /// scrolled off could not be repainted.
    pub fn frame(&self, now: Duration, width: usize, height: usize, last: bool) -> Vec<String> {
        let width = if width == 0 { DEFAULT_WIDTH } else { width };
        let (finished, known) = self.counts();
        let mut header = format!(
            "[+] Building {} ({finished}/{known})",
            secs(now.as_secs_f64())
        );
        if last && !self.failed {
            header.push_str(" FINISHED");
        }
        let mut lines = vec![cut(&header, width)];
        for s in &self.steps {
            let (word, time) = match s.state {
                State::Running => ("", secs(now.saturating_sub(s.started).as_secs_f64())),
                State::Done(t) => ("", secs(t)),
                State::Cached => ("CACHED ", String::new()),
                State::Error(t) => ("ERROR ", secs(t)),
                State::Canceled(t) => ("CANCELED ", secs(t)),
            };
            let line = step_line(&format!(" => {word}{}", s.label), &time, width);
            lines.push(if matches!(s.state, State::Error(_)) {
                format!("\x1b[31m{line}\x1b[0m")
            } else {
                line
            });
            if s.state == State::Running && !last {
                for t in s.tail(TAIL_LINES) {
                    lines.push(format!(
                        "\x1b[2m{}\x1b[0m",
                        cut(&format!(" => => # {t}"), width)
                    ));
                }
            }
        }
        if !last && height > 2 && lines.len() > height - 1 {
            let drop = lines.len() - (height - 1);
            lines.drain(1..=drop);
        }
        lines
    }

    /// The whole output of each failed step, framed as BuildKit does, for after the last
    /// frame (what `--progress plain` showed as it came).
    pub fn error_report(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for s in &self.steps {
            if !matches!(s.state, State::Error(_)) || s.output.is_empty() {
                continue;
            }
            out.extend_from_slice(format!("------\n > {}:\n", s.label).as_bytes());
            if s.dropped > 0 {
                out.extend_from_slice(
                    format!("[{} bytes of earlier output not kept]\n", s.dropped).as_bytes(),
                );
            }
            out.extend_from_slice(&s.output);
            if !s.output.ends_with(b"\n") {
                out.push(b'\n');
            }
            out.extend_from_slice(b"------\n");
        }
        out
    }
}

/// `s` cut to `width` columns.
fn cut(s: &str, width: usize) -> String {
    console::truncate_str(s, width, "").into_owned()
}

/// `left` and `time` right-aligned on a line of `width` columns, `left` cut to make room.
fn step_line(left: &str, time: &str, width: usize) -> String {
    if time.is_empty() {
        return cut(left, width);
    }
    let room = width.saturating_sub(console::measure_text_width(time) + 1);
    let left = cut(left, room);
    let pad = width
        .saturating_sub(console::measure_text_width(&left) + console::measure_text_width(time));
    format!("{left}{}{time}", " ".repeat(pad.max(1)))
}

/// What repaints `painted` lines (the cursor sits below them) as `above` (printed once,
/// scrolling up) followed by `frame`.
pub fn repaint(painted: usize, above: &[String], frame: &[String]) -> String {
    let mut s = String::new();
    if painted > 0 {
        s.push_str(&format!("\x1b[{painted}A\r"));
    }
    for l in above.iter().chain(frame) {
        s.push_str("\x1b[2K");
        s.push_str(l);
        s.push('\n');
    }
    // Whatever is left of a longer frame before.
    s.push_str("\x1b[J");
    s
}

/// The display on a terminal.
pub struct Tty<W: Write> {
    out: W,
    board: Board,
    start: Instant,
    painted: usize,
    size: fn() -> (usize, usize),
}

/// Columns and rows of the terminal on stderr (0 when it tells none).
fn stderr_size() -> (usize, usize) {
    match console::Term::stderr().size_checked() {
        Some((rows, cols)) => (usize::from(cols), usize::from(rows)),
        None => (0, 0),
    }
}

impl Tty<std::io::Stderr> {
    /// A display on stderr.
    pub fn stderr() -> Self {
        Tty {
            out: std::io::stderr(),
            board: Board::default(),
            start: Instant::now(),
            painted: 0,
            size: stderr_size,
        }
    }
}

impl<W: Write> Tty<W> {
    fn paint(&mut self, last: bool) -> std::io::Result<()> {
        let (width, height) = (self.size)();
        let above = self.board.take_pending();
        let frame = self.board.frame(self.start.elapsed(), width, height, last);
        self.out
            .write_all(repaint(self.painted, &above, &frame).as_bytes())?;
        self.out.flush()?;
        self.painted = frame.len();
        Ok(())
    }

    /// Takes an event and repaints.
    pub fn event(&mut self, e: &pb::BuildEvent) -> std::io::Result<()> {
        self.board.event(e, self.start.elapsed());
        self.paint(false)
    }

    /// Repaints if a timer moves.
    pub fn tick(&mut self) -> std::io::Result<()> {
        if self.board.running() {
            self.paint(false)?;
        }
        Ok(())
    }

    /// Paints the final frame and, if the build failed with `error`, the failed step's
    /// output.
    pub fn finish(&mut self, error: Option<&str>) -> std::io::Result<()> {
        if let Some(m) = error {
            self.board.fail(m, self.start.elapsed());
        }
        self.paint(true)?;
        self.painted = 0;
        self.out.write_all(&self.board.error_report())?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::build_event::Kind;

    fn ev(kind: Kind, step: &str) -> pb::BuildEvent {
        pb::BuildEvent {
            step: step.into(),
            kind: kind.into(),
            ..Default::default()
        }
    }

    fn out(step: &str, data: &str) -> pb::BuildEvent {
        pb::BuildEvent {
            data: data.as_bytes().to_vec(),
            ..ev(Kind::Output, step)
        }
    }

    fn done(step: &str, t: f64) -> pb::BuildEvent {
        pb::BuildEvent {
            elapsed: t,
            ..ev(Kind::Done, step)
        }
    }

    fn plain(lines: &[String]) -> Vec<String> {
        lines
            .iter()
            .map(|l| console::strip_ansi_codes(l).into_owned())
            .collect()
    }

    const S: Duration = Duration::from_secs(1);

    fn board(events: &[pb::BuildEvent]) -> Board {
        let mut b = Board::default();
        for e in events {
            b.event(e, S);
        }
        b
    }

    #[test]
    fn events_move_steps_through_their_states() {
        let b = board(&[
            ev(Kind::Start, "[stage-0 1/3] FROM busybox"),
            done("[stage-0 1/3] FROM busybox", 0.0),
            ev(Kind::Cached, "[stage-0 2/3] COPY a /a"),
            ev(Kind::Start, "[stage-0 3/3] RUN make"),
            out("[stage-0 3/3] RUN make", "cc -c a.c\n"),
        ]);
        let states: Vec<_> = b.steps.iter().map(|s| s.state.clone()).collect();
        assert_eq!(states, [State::Done(0.0), State::Cached, State::Running]);
        assert!(b.running());
        assert_eq!(b.counts(), (2, 3));
    }

    #[test]
    fn the_counter_adds_every_seen_stages_steps() {
        let b = board(&[
            ev(Kind::Start, "[a 1/2] FROM busybox"),
            ev(Kind::Start, "[b 1/4] FROM busybox"),
            done("[b 1/4] FROM busybox", 0.1),
        ]);
        assert_eq!(b.counts(), (1, 6));
        // A label of no known form still counts as one step.
        let b = board(&[ev(Kind::Start, "odd step")]);
        assert_eq!(b.counts(), (0, 1));
    }

    #[test]
    fn a_frame_has_the_header_states_times_and_a_running_steps_tail() {
        let mut b = board(&[
            ev(Kind::Start, "[stage-0 1/4] FROM busybox"),
            done("[stage-0 1/4] FROM busybox", 0.3),
            ev(Kind::Cached, "[stage-0 2/4] COPY a /a"),
        ]);
        b.event(
            &ev(Kind::Start, "[stage-0 3/4] RUN make"),
            Duration::from_millis(1500),
        );
        let text: String = (1..=8).map(|i| format!("line {i}\n")).collect();
        b.event(&out("[stage-0 3/4] RUN make", &text), S);
        let f = plain(&b.frame(Duration::from_millis(3200), 60, 40, false));
        assert_eq!(f[0], "[+] Building 3.2s (2/4)");
        assert_eq!(
            f[1],
            format!(" => [stage-0 1/4] FROM busybox{}0.3s", " ".repeat(26))
        );
        assert_eq!(f[2], " => CACHED [stage-0 2/4] COPY a /a");
        assert!(f[3].starts_with(" => [stage-0 3/4] RUN make ") && f[3].ends_with(" 1.7s"));
        assert_eq!(f[3].len(), 60);
        let tail: Vec<_> = (3..=8).map(|i| format!(" => => # line {i}")).collect();
        assert_eq!(f[4..], tail[..]);
        // Done, the tail collapses.
        b.event(&done("[stage-0 3/4] RUN make", 2.0), S);
        let f = plain(&b.frame(Duration::from_millis(3300), 60, 40, false));
        assert_eq!(f.len(), 4);
        assert!(f[3].ends_with(" 2.0s"));
        let f = plain(&b.frame(Duration::from_millis(3300), 60, 40, true));
        assert_eq!(f[0], "[+] Building 3.3s (3/4) FINISHED");
    }

    #[test]
    fn long_lines_are_cut_to_the_width() {
        let label = format!("[stage-0 2/2] RUN {}", "x".repeat(200));
        let mut b = board(&[ev(Kind::Start, &label)]);
        b.event(&out(&label, &format!("{}\n", "y".repeat(300))), S);
        for width in [20, 57, 80] {
            let f = b.frame(Duration::from_secs(2), width, 40, false);
            assert_eq!(f.len(), 3);
            for l in &f {
                assert!(console::measure_text_width(l) <= width, "{width}: {l:?}");
            }
            // The timer survives the cut.
            assert!(plain(&f)[1].ends_with(" 1.0s"), "{:?}", f[1]);
        }
        // No size known: 80 columns.
        let f = b.frame(Duration::from_secs(2), 0, 0, false);
        assert_eq!(console::measure_text_width(&f[1]), 80);
    }

    #[test]
    fn a_frame_taller_than_the_terminal_keeps_the_header_and_latest_steps() {
        let events: Vec<_> = (1..=30)
            .map(|i| ev(Kind::Cached, &format!("[stage-0 {i}/30] RUN n{i}")))
            .collect();
        let b = board(&events);
        let f = plain(&b.frame(S, 80, 10, false));
        assert_eq!(f.len(), 9);
        assert!(f[0].starts_with("[+] Building"));
        assert!(f[8].contains("RUN n30"));
        assert!(f[1].contains("RUN n23"));
        // The final frame is printed whole.
        assert_eq!(b.frame(S, 80, 10, true).len(), 31);
    }

    #[test]
    fn tails_show_what_a_terminal_would() {
        let mut s = Step::new("x", State::Running, S);
        s.push_output(b"a\r\n\n  \n10%\r50%\r100%\n\x1b[31mred\x1b[0m\tend\x07\npartial");
        assert_eq!(s.tail(6), ["a", "100%", "red end", "partial"]);
        assert_eq!(s.tail(2), ["red end", "partial"]);
    }

    #[test]
    fn a_failure_marks_the_named_step_and_cancels_the_others() {
        let mut b = board(&[
            ev(Kind::Start, "[a 2/2] RUN sleep 5"),
            ev(Kind::Start, "[b 2/2] RUN false"),
            out("[b 2/2] RUN false", "boom"),
        ]);
        b.fail(
            "step [b 2/2] RUN false (Dockerfile line 4): exit code 1",
            Duration::from_secs(3),
        );
        assert_eq!(b.steps[0].state, State::Canceled(2.0));
        assert_eq!(b.steps[1].state, State::Error(2.0));
        let f = plain(&b.frame(Duration::from_secs(3), 50, 40, true));
        assert_eq!(f[0], "[+] Building 3.0s (0/4)");
        assert!(f[1].starts_with(" => CANCELED [a 2/2] RUN sleep 5"));
        assert!(f[2].starts_with(" => ERROR [b 2/2] RUN false") && f[2].ends_with(" 2.0s"));
        assert_eq!(
            String::from_utf8(b.error_report()).unwrap(),
            "------\n > [b 2/2] RUN false:\nboom\n------\n"
        );
    }

    #[test]
    fn a_step_that_failed_before_it_started_is_added() {
        let mut b = board(&[ev(Kind::Cached, "[stage-0 1/2] FROM busybox")]);
        b.fail(
            "step [stage-0 2/2] COPY nope / (Dockerfile line 2): nope: not found",
            S,
        );
        assert_eq!(b.steps[1].label, "[stage-0 2/2] COPY nope /");
        assert_eq!(b.steps[1].state, State::Error(0.0));
        // No output, no report; an unnamed failure marks the only running step.
        assert!(b.error_report().is_empty());
        let mut b = board(&[ev(Kind::Start, "[stage-0 2/2] RUN x")]);
        b.fail("berthd went away", S);
        assert_eq!(b.steps[0].state, State::Error(0.0));
        // A failure that names no step still says no FINISHED.
        let mut b = board(&[done("[stage-0 1/1] FROM busybox", 0.1)]);
        b.fail("the build ended without a result", S);
        assert_eq!(
            plain(&b.frame(S, 80, 0, true))[0],
            "[+] Building 1.0s (1/1)"
        );
    }

    #[test]
    fn repaint_goes_up_over_the_last_frame_and_prints_warnings_above() {
        let frame = vec!["[+] Building".to_string(), " => x".to_string()];
        assert_eq!(
            repaint(0, &[], &frame),
            "\x1b[2K[+] Building\n\x1b[2K => x\n\x1b[J"
        );
        assert_eq!(
            repaint(3, &["pulling b".to_string()], &frame),
            "\x1b[3A\r\x1b[2Kpulling b\n\x1b[2K[+] Building\n\x1b[2K => x\n\x1b[J"
        );
    }

    #[test]
    fn a_tty_paints_frames_and_a_final_report() {
        let mut t = Tty {
            out: Vec::new(),
            board: Board::default(),
            start: Instant::now(),
            painted: 0,
            size: || (40, 20),
        };
        t.event(&ev(Kind::Start, "[stage-0 2/2] RUN false"))
            .unwrap();
        t.event(&pb::BuildEvent {
            message: "pulling busybox".into(),
            ..ev(Kind::Warning, "")
        })
        .unwrap();
        t.event(&out("[stage-0 2/2] RUN false", "oops\n")).unwrap();
        t.finish(Some(
            "step [stage-0 2/2] RUN false (Dockerfile line 2): exit code: 1",
        ))
        .unwrap();
        let s = String::from_utf8(t.out).unwrap();
        // Each repaint after the first goes up over the two (then three) lines before.
        assert!(s.contains("\x1b[2A\r\x1b[2Kpulling busybox\n"), "{s:?}");
        assert!(s.contains("\x1b[2A\r"), "{s:?}");
        assert!(s.contains("\x1b[3A\r"), "{s:?}");
        assert!(s.contains("ERROR [stage-0 2/2] RUN false"), "{s:?}");
        assert!(
            s.ends_with("------\n > [stage-0 2/2] RUN false:\noops\n------\n"),
            "{s:?}"
        );
    }
}
