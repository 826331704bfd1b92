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
    let frames = std::iter::once(clean(thread)).chain(
        user.iter()
            .rev()
            .chain(kernel.iter().rev())
            .map(|f| clean(&f.flame_name())),
    );
    Some(frames.collect::<Vec<_>>().join(";"))
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
    use std::sync::Arc;

    use super::*;
    use crate::kernel::frame::{Frame, Module};

    fn user(name: &str) -> Frame {
        Frame {
            function: Some(name.into()),
            file: Some("/src/app.c".into()),
            line: Some(12),
            ..Frame::unnamed(None, 0)
        }
    }

    fn kernel(name: &str) -> Frame {
        Frame::kernel(0xffff_ffff_8100_0000, Some((name, 0x10)))
    }

    fn stacks(user: Vec<Frame>, kernel: Vec<Frame>) -> Stacks {
        Stacks {
            kernel: (!kernel.is_empty()).then(|| kernel.into()),
            user: (!user.is_empty()).then(|| user.into()),
            user_code: None,
        }
    }

    #[test]
    fn user_frames_sit_above_the_thread_and_kernel_frames_above_them() {
        let app = Arc::new(Module {
            path: "/opt/app".into(),
            build_id: Some("0a1b2c".into()),
        });
        let s = stacks(
            vec![
                user("__GI___clock_nanosleep"),
                user("wait_for_work"),
                Frame::unnamed(Some(app), 0x1139),
                Frame::unnamed(None, 0x7f00_0000_1000),
            ],
            vec![
                kernel("__schedule"),
                kernel("do_nanosleep"),
                Frame::kernel(0xffff_ffff_8100_0042, None),
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
        let s = stacks(vec![], vec![kernel("schedule"), kernel("worker_thread")]);
        assert_eq!(
            folded("kworker/0:1", &s).as_deref(),
            Some("kworker/0:1;worker_thread;schedule")
        );
        assert_eq!(folded("idle", &stacks(vec![], vec![])), None);
    }

    #[test]
    fn hostile_names_cannot_add_frames_or_lines() {
        let s = stacks(vec![user("evil;root\nnext")], vec![kernel("k;x")]);
        assert_eq!(
            folded("t;h\r", &s).as_deref(),
            Some("t_h_;evil_root_next;k_x")
        );
    }
}
