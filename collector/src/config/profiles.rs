//! `[profiles]`: whether kotel exports its off-CPU and slow-call stacks as OTLP profiles.
//! A tri-state, so that the default can follow where the data goes: files always take
//! profiles, while many receivers do not serve the profiles service yet.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// `[profiles]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfilesConfig {
    /// `"auto"` (on in files mode, off with an endpoint), `true` or `false`.
    #[serde(deserialize_with = "mode")]
    pub enabled: ProfilesMode,
}

/// `[profiles] enabled`, and the `--profiles` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProfilesMode {
    /// On in files mode (no endpoint), off when an endpoint is set: a receiver without the
    /// profiles service would only answer `UNIMPLEMENTED` / 404.
    #[default]
    Auto,
    /// Always on. A receiver that does not take profiles gets them once; later profiles are
    /// dropped unsent and counted (`unsupported`).
    On,
    /// Off.
    Off,
}

impl ProfilesMode {
    /// Whether profiles are exported, given whether an OTLP endpoint is set (after the
    /// environment and the flags).
    pub fn wanted(self, has_endpoint: bool) -> bool {
        match self {
            ProfilesMode::Auto => !has_endpoint,
            ProfilesMode::On => true,
            ProfilesMode::Off => false,
        }
    }
}

/// What a value may be, for messages.
const EXPECTED: &str = "\"auto\", true or false";

impl FromStr for ProfilesMode {
    type Err = String;

    /// `auto`, `on`/`true` or `off`/`false` (case-insensitive): the flag's words and the
    /// file's.
    fn from_str(s: &str) -> Result<ProfilesMode, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(ProfilesMode::Auto),
            "on" | "true" => Ok(ProfilesMode::On),
            "off" | "false" => Ok(ProfilesMode::Off),
            _ => Err(format!("{s:?} is not one of auto, on, off")),
        }
    }
}

impl fmt::Display for ProfilesMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProfilesMode::Auto => "auto",
            ProfilesMode::On => "on",
            ProfilesMode::Off => "off",
        })
    }
}

/// `enabled = "auto"`, `enabled = true` or `enabled = false` (the strings `"true"`, `"false"`,
/// `"on"` and `"off"` too).
fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<ProfilesMode, D::Error> {
    struct Visitor;

    impl serde::de::Visitor<'_> for Visitor {
        type Value = ProfilesMode;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(EXPECTED)
        }

        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<ProfilesMode, E> {
            Ok(if v {
                ProfilesMode::On
            } else {
                ProfilesMode::Off
            })
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ProfilesMode, E> {
            v.parse()
                .map_err(|_| E::custom(format!("{v:?} is not one of {EXPECTED}")))
        }
    }

    d.deserialize_any(Visitor)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn parse(toml: &str) -> Result<ProfilesMode, String> {
        Config::parse(toml, Path::new("p.toml"))
            .map(|c| c.profiles.enabled)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_file_takes_auto_and_booleans() {
        assert_eq!(parse(""), Ok(ProfilesMode::Auto));
        assert_eq!(
            parse("[profiles]\nenabled = \"auto\"\n"),
            Ok(ProfilesMode::Auto)
        );
        assert_eq!(parse("[profiles]\nenabled = true\n"), Ok(ProfilesMode::On));
        assert_eq!(
            parse("[profiles]\nenabled = false\n"),
            Ok(ProfilesMode::Off)
        );
        assert_eq!(
            parse("[profiles]\nenabled = \"false\"\n"),
            Ok(ProfilesMode::Off)
        );
        for bad in ["enabled = \"sometimes\"", "enabled = 1", "sample_rate = 3"] {
            let err = parse(&format!("[profiles]\n{bad}\n")).unwrap_err();
            assert!(err.contains("line 2"), "{bad}: {err}");
        }
        let err = parse("[profiles]\nenabled = \"sometimes\"\n").unwrap_err();
        assert!(err.contains("\"auto\", true or false"), "{err}");
    }

    #[test]
    fn auto_means_files_only() {
        assert!(ProfilesMode::Auto.wanted(false));
        assert!(!ProfilesMode::Auto.wanted(true));
        assert!(ProfilesMode::On.wanted(true) && ProfilesMode::On.wanted(false));
        assert!(!ProfilesMode::Off.wanted(true) && !ProfilesMode::Off.wanted(false));
    }

    #[test]
    fn the_flag_words_parse_and_print_back() {
        for mode in [ProfilesMode::Auto, ProfilesMode::On, ProfilesMode::Off] {
            assert_eq!(mode.to_string().parse(), Ok(mode));
        }
        assert_eq!("ON".parse(), Ok(ProfilesMode::On));
        assert!("yes".parse::<ProfilesMode>().is_err());
    }
}
