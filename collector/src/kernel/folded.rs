//! One event's stacks in the folded format flame graphs take: `thread;main;…;write;
//! entry_SYSCALL_64;…;__schedule`, outermost first, with the user frames above the thread and
//! the kernel frames above them, as the kernel ran on the user's behalf. Frames keep their
//! function name only (an offset or a source line would split one function into many boxes);
//! a user frame that names no function keeps its `module+0xoff`. Names are untrusted (a binary
//! may call a function anything): the separators of the format, `;` and line breaks, become
//! `_` here, and the renderer escapes the rest.

use super::Stacks;

/// The folded line of `stacks` under `thread`, or `None` when the event carries no frame.
pub fn folded(thread: &str, stacks: &Stacks) -> Option<String> {
    let user = stacks.user.as_deref().unwrap_or_default();
    let kernel = stacks.kernel.as_deref().unwrap_or_default();
    if user.is_empty() && kernel.is_empty() {
        return None;
    }
    let frames = std::iter::once(clean(thread))
        .chain(user.iter().rev().map(|f| clean(user_function(f))))
        .chain(kernel.iter().rev().map(|f| clean(kernel_function(f))));
    Some(frames.collect::<Vec<_>>().join(";"))
}

/// A user frame's function: `name (file:line)` → `name`, `module+0xoff [buildid …]` →
/// `module+0xoff`, `0x… [unknown]` → `[unknown]`.
fn user_function(frame: &str) -> &str {
    if frame.ends_with(" [unknown]") {
        return "[unknown]";
    }
    if let Some(i) = frame.find(" [buildid ") {
        return &frame[..i];
    }
    match frame.rfind(" (") {
        Some(i) if frame.ends_with(')') => &frame[..i],
        _ => frame,
    }
}

/// A kernel frame's function: `name+0xoff` → `name`.
fn kernel_function(frame: &str) -> &str {
    frame.split('+').next().unwrap_or_default()
}

/// `name` with the folded format's separators replaced.
fn clean(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c == ';' || c == '\n' || c == '\r' {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stacks(user: &[&str], kernel: &[&str]) -> Stacks {
        let own = |v: &[&str]| (!v.is_empty()).then(|| v.iter().map(|s| s.to_string()).collect());
        Stacks {
            kernel: own(kernel),
            user: own(user),
            user_code: None,
        }
    }

    #[test]
    fn user_frames_sit_above_the_thread_and_kernel_frames_above_them() {
        let s = stacks(
            &[
                "__GI___clock_nanosleep (./time/clock_nanosleep.c:71)",
                "wait_for_work (/src/app.c:12)",
                "app+0x1139 [buildid 0a1b2c]",
                "0x7f0000001000 [unknown]",
            ],
            &[
                "__schedule+0x4cf",
                "do_nanosleep+0x5e",
                "0xffffffff81000042",
            ],
        );
        assert_eq!(
            folded("sleeper", &s).as_deref(),
            Some(
                "sleeper;[unknown];app+0x1139;wait_for_work;__GI___clock_nanosleep;\
                 0xffffffff81000042;do_nanosleep;__schedule"
            )
        );
    }

    #[test]
    fn a_kernel_thread_has_kernel_frames_only_and_no_frames_means_no_line() {
        let s = stacks(&[], &["schedule+0x10", "worker_thread+0x2"]);
        assert_eq!(
            folded("kworker/0:1", &s).as_deref(),
            Some("kworker/0:1;worker_thread;schedule")
        );
        assert_eq!(folded("idle", &stacks(&[], &[])), None);
    }

    #[test]
    fn hostile_names_cannot_add_frames_or_lines() {
        let s = stacks(&["evil;root\nnext (a.c:1)"], &["k;x+0x1"]);
        assert_eq!(
            folded("t;h\r", &s).as_deref(),
            Some("t_h_;evil_root_next;k_x")
        );
    }
}
