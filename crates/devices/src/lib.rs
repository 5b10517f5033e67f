//! Legacy PC devices: each a pure state machine plus a thin bus adapter.

pub mod i8042;
pub mod rtc;
pub mod serial;

/// Platform events devices report to the VMM (reset and power-off requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformEvent {
    /// The guest asked for a reset (i8042 pulse, reset register).
    Reset,
    /// The guest asked to power off (ACPI S5).
    PowerOff,
}

/// Where devices send [`PlatformEvent`]s.
pub type EventSink = std::sync::Arc<dyn Fn(PlatformEvent) + Send + Sync>;
