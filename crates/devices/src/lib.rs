//! Legacy PC devices: each a pure state machine plus a thin bus adapter.

pub mod debug_exit;
pub mod debugcon;
pub mod i8042;
pub mod pc_testdev;
pub mod rtc;
pub mod serial;

/// Platform events devices report to the VMM (reset and power-off requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformEvent {
    /// The guest asked for a reset (i8042 pulse, reset register).
    Reset,
    /// The guest asked to power off (ACPI S5).
    PowerOff,
    /// The guest wrote this value to the debug-exit port (see [`debug_exit`]).
    DebugExit(u32),
}

/// Where devices send [`PlatformEvent`]s.
pub type EventSink = std::sync::Arc<dyn Fn(PlatformEvent) + Send + Sync>;
