//! Per-tube settings as the engine holds them: each tube's own values, and the server's
//! defaults for the ones a tube leaves unset. Names, units and wire formats live with
//! [`TubeSetting`] in the protocol layer.

use crate::protocol::TubeSetting;

/// A tube's own settings; `None` means "the server default".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TubeSettings([Option<u64>; TubeSetting::COUNT]);

impl TubeSettings {
    /// The tube's own value of `setting`, if it has one.
    pub fn get(&self, setting: TubeSetting) -> Option<u64> {
        self.0[setting.index()]
    }

    /// Sets (or, with `None`, clears) the tube's own value of `setting`.
    pub fn set(&mut self, setting: TubeSetting, value: Option<u64>) {
        self.0[setting.index()] = value;
    }

    /// Whether every setting follows the server default.
    pub fn is_default(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    /// The settings the tube sets itself, with their values.
    pub fn explicit(&self) -> impl Iterator<Item = (TubeSetting, u64)> + '_ {
        TubeSetting::ALL
            .into_iter()
            .filter_map(|s| self.get(s).map(|v| (s, v)))
    }
}

/// The server's value for each setting a tube does not set (`larder serve --max-attempts`
/// and friends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettingDefaults([u64; TubeSetting::COUNT]);

impl Default for SettingDefaults {
    fn default() -> Self {
        SettingDefaults(TubeSetting::ALL.map(TubeSetting::builtin_default))
    }
}

impl SettingDefaults {
    /// The server's value of `setting`.
    pub fn get(&self, setting: TubeSetting) -> u64 {
        self.0[setting.index()]
    }

    /// Sets the server's value of `setting`.
    pub fn set(&mut self, setting: TubeSetting, value: u64) {
        self.0[setting.index()] = value;
    }
}
