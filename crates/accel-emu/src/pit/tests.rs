use super::*;

/// Linux's LATCH for HZ = 250.
const LATCH_250HZ: u16 = ((PIT_FREQ_HZ + 125) / 250) as u16;

fn program_ch0(pit: &mut Pit, cmd: u8, count: u16, now: u64) {
    pit.io_write(PORT_CMD, cmd, now);
    pit.io_write(PORT_CH0, count as u8, now);
    pit.io_write(PORT_CH0, (count >> 8) as u8, now);
}

#[test]
fn tick_conversion_is_exact() {
    assert_eq!(ns_to_ticks(1_000_000_000), PIT_FREQ_HZ);
    assert_eq!(ns_to_ticks(3_600_000_000_000), 3600 * PIT_FREQ_HZ);
    for k in [1u64, 2, 3, 1000, 65536, 1 << 40] {
        let ns = ticks_to_ns(k);
        assert_eq!(ns_to_ticks(ns), k);
        assert_eq!(ns_to_ticks(ns - 1), k - 1);
    }
}

#[test]
fn unprogrammed_pit_is_silent() {
    let mut pit = Pit::new();
    assert_eq!(pit.next_deadline(), None);
    assert!(!pit.advance(10_000_000_000));
    assert_eq!(pit.io_read(PORT_CMD, 0), 0xff);
    assert_eq!(pit.io_read(0x44, 0), 0xff);
}

/// Channel 0 periodic as Linux's PIT clockevent sets it (0x34: mode 2, LSB/MSB).
#[test]
fn channel0_mode2_periodic_without_drift() {
    let mut pit = Pit::new();
    let t0 = 5_000_000;
    program_ch0(&mut pit, 0x34, LATCH_250HZ, t0);
    let start = ns_to_ticks(t0);
    let period = u64::from(LATCH_250HZ);
    let first = ticks_to_ns(start + period);
    assert_eq!(pit.next_deadline(), Some(first));
    assert!(!pit.advance(first - 1));
    assert!(pit.advance(first));
    assert!(!pit.advance(first));
    assert_eq!(pit.next_deadline(), Some(ticks_to_ns(start + 2 * period)));
    // 1000 periods later the deadline is still on the exact grid.
    let mut now = first;
    for _ in 0..1000 {
        now = pit.next_deadline().unwrap();
        assert!(pit.advance(now));
    }
    assert_eq!(now, ticks_to_ns(start + 1001 * period));
    // Four seconds at HZ=250 is exactly 1000 periods of 4 ms (within a tick).
    let four_secs = ticks_to_ns(start + 1001 * period) - ticks_to_ns(start + period);
    assert!(four_secs.abs_diff(4_000_000_000) < 1_000_000, "{four_secs}");
}

#[test]
fn late_advance_collapses_missed_edges() {
    let mut pit = Pit::new();
    program_ch0(&mut pit, 0x34, 1000, 0);
    assert!(pit.advance(ticks_to_ns(5500)));
    assert!(!pit.advance(ticks_to_ns(5999)));
    assert_eq!(pit.next_deadline(), Some(ticks_to_ns(6000)));
}

#[test]
fn mode2_out_and_count() {
    let mut pit = Pit::new();
    program_ch0(&mut pit, 0x34, 100, 0);
    assert!(pit.irq0_level(ticks_to_ns(98)));
    assert!(
        !pit.irq0_level(ticks_to_ns(99)),
        "OUT low while the count is 1"
    );
    assert!(pit.irq0_level(ticks_to_ns(100)));
    // Unlatched LSB/MSB reads alternate.
    let now = ticks_to_ns(30);
    assert_eq!(pit.io_read(PORT_CH0, now), 70);
    assert_eq!(pit.io_read(PORT_CH0, now), 0);
}

#[test]
fn mode3_square_wave() {
    let mut pit = Pit::new();
    program_ch0(&mut pit, 0x36, 10, 0);
    assert!(pit.irq0_level(ticks_to_ns(4)));
    assert!(!pit.irq0_level(ticks_to_ns(5)));
    assert!(!pit.irq0_level(ticks_to_ns(9)));
    assert!(pit.irq0_level(ticks_to_ns(10)));
    assert_eq!(pit.next_deadline(), Some(ticks_to_ns(10)));
    // Odd count: high for (N+1)/2.
    program_ch0(&mut pit, 0x36, 7, 0);
    assert!(pit.irq0_level(ticks_to_ns(3)));
    assert!(!pit.irq0_level(ticks_to_ns(4)));
    // Counts decrement by two.
    program_ch0(&mut pit, 0x36, 10, 0);
    assert_eq!(pit.io_read(PORT_CH0, ticks_to_ns(2)), 6);
}

/// Linux's pit_shutdown: mode 0 with count 0 leaves one final edge after 65536 ticks.
#[test]
fn mode0_one_shot_and_shutdown() {
    let mut pit = Pit::new();
    program_ch0(&mut pit, 0x30, 500, 0);
    assert!(!pit.irq0_level(0), "mode 0 OUT starts low");
    assert_eq!(pit.next_deadline(), Some(ticks_to_ns(500)));
    assert!(pit.advance(ticks_to_ns(500)));
    assert!(pit.irq0_level(ticks_to_ns(501)));
    assert_eq!(pit.next_deadline(), None, "one-shot");
    assert!(!pit.advance(ticks_to_ns(100_000)));
    let t = ticks_to_ns(200_000);
    program_ch0(&mut pit, 0x30, 0, t);
    assert_eq!(pit.next_deadline(), Some(ticks_to_ns(200_000 + 65536)));
    // Mode 0 counter keeps wrapping after terminal count.
    program_ch0(&mut pit, 0x30, 10, 0);
    assert_eq!(pit.io_read(PORT_CH0, ticks_to_ns(12)), 0xfe);
    assert_eq!(pit.io_read(PORT_CH0, ticks_to_ns(12)), 0xff);
}

#[test]
fn mode0_first_byte_stops_count() {
    let mut pit = Pit::new();
    program_ch0(&mut pit, 0x30, 500, 0);
    pit.io_write(PORT_CH0, 0x10, ticks_to_ns(100));
    assert_eq!(pit.next_deadline(), None);
    pit.io_write(PORT_CH0, 0x00, ticks_to_ns(200));
    assert_eq!(pit.next_deadline(), Some(ticks_to_ns(216)));
}

/// pit_calibrate_tsc: gate channel 2 on, mode 0, count 50 ms, poll port 0x61 bit 5.
#[test]
fn channel2_calibration_via_port61() {
    let mut pit = Pit::new();
    let t0 = 1_000_000_000;
    let v = pit.io_read(PORT_61, t0);
    assert_eq!(v & 0x01, 0, "channel 2 gate starts low");
    pit.io_write(PORT_61, (v & !0x02) | 0x01, t0);
    pit.io_write(PORT_CMD, 0xb0, t0);
    let latch: u16 = (PIT_FREQ_HZ / 20) as u16;
    pit.io_write(PORT_CH2, latch as u8, t0);
    pit.io_write(PORT_CH2, (latch >> 8) as u8, t0);
    let start = ns_to_ticks(t0);
    let expiry = ticks_to_ns(start + u64::from(latch));
    assert_eq!(pit.io_read(PORT_61, expiry - 1) & 0x20, 0);
    assert_eq!(pit.io_read(PORT_61, expiry) & 0x21, 0x21);
    assert!((expiry - t0).abs_diff(50_000_000) < 1_000);
    // Channel 2 never raises IRQ0.
    assert!(!pit.advance(expiry + 1));
}

/// quick_pit_calibrate: count 0xffff, read LSB then MSB and watch the MSB fall.
#[test]
fn channel2_quick_calibration_msb_polling() {
    let mut pit = Pit::new();
    pit.io_write(PORT_61, 0x01, 0);
    pit.io_write(PORT_CMD, 0xb0, 0);
    pit.io_write(PORT_CH2, 0xff, 0);
    pit.io_write(PORT_CH2, 0xff, 0);
    for i in 1..10u64 {
        let now = ticks_to_ns(256 * i + 3);
        let _lsb = pit.io_read(PORT_CH2, now);
        let msb = pit.io_read(PORT_CH2, now);
        assert_eq!(u64::from(msb), 0xff - i);
    }
}

#[test]
fn gate_low_suspends_mode0() {
    let mut pit = Pit::new();
    pit.io_write(PORT_61, 0x01, 0);
    pit.io_write(PORT_CMD, 0xb0, 0);
    pit.io_write(PORT_CH2, 100, 0);
    pit.io_write(PORT_CH2, 0, 0);
    pit.io_write(PORT_61, 0x00, ticks_to_ns(40)); // gate off with 60 left
    assert_eq!(pit.io_read(PORT_61, ticks_to_ns(1000)) & 0x20, 0);
    assert_eq!(pit.io_read(PORT_CH2, ticks_to_ns(1000)), 60);
    pit.io_write(PORT_61, 0x01, ticks_to_ns(2000));
    assert_eq!(pit.io_read(PORT_61, ticks_to_ns(2059)) & 0x20, 0);
    assert_eq!(pit.io_read(PORT_61, ticks_to_ns(2060)) & 0x20, 0x20);
}

#[test]
fn gate_controls_mode2_and_triggers_mode1() {
    let mut pit = Pit::new();
    // Mode 2 on channel 2 with the gate low: OUT high, not counting.
    pit.io_write(PORT_CMD, 0xb4, 0);
    pit.io_write(PORT_CH2, 10, 0);
    pit.io_write(PORT_CH2, 0, 0);
    assert_eq!(pit.io_read(PORT_CMD - 1, ticks_to_ns(50)), 10);
    pit.io_write(PORT_61, 0x01, ticks_to_ns(100));
    assert_eq!(pit.io_read(PORT_61, ticks_to_ns(109)) & 0x20, 0);
    assert_eq!(pit.io_read(PORT_61, ticks_to_ns(110)) & 0x20, 0x20);
    // Mode 1: waits for a gate rising edge, OUT low until terminal count.
    pit.io_write(PORT_61, 0x00, ticks_to_ns(200));
    pit.io_write(PORT_CMD, 0xb2, ticks_to_ns(200));
    pit.io_write(PORT_CH2, 20, ticks_to_ns(200));
    pit.io_write(PORT_CH2, 0, ticks_to_ns(200));
    assert_eq!(pit.io_read(PORT_61, ticks_to_ns(300)) & 0x20, 0x20);
    pit.io_write(PORT_61, 0x01, ticks_to_ns(300));
    assert_eq!(pit.io_read(PORT_61, ticks_to_ns(319)) & 0x20, 0);
    assert_eq!(pit.io_read(PORT_61, ticks_to_ns(320)) & 0x20, 0x20);
}

#[test]
fn mode4_strobe() {
    let mut pit = Pit::new();
    program_ch0(&mut pit, 0x38, 50, 0);
    assert!(pit.irq0_level(ticks_to_ns(49)));
    assert!(!pit.irq0_level(ticks_to_ns(50)));
    assert!(pit.irq0_level(ticks_to_ns(51)));
    assert_eq!(pit.next_deadline(), Some(ticks_to_ns(51)));
    assert!(pit.advance(ticks_to_ns(51)));
    assert_eq!(pit.next_deadline(), None);
}

#[test]
fn latch_command_freezes_count() {
    let mut pit = Pit::new();
    program_ch0(&mut pit, 0x34, 1000, 0);
    pit.io_write(PORT_CMD, 0x00, ticks_to_ns(100));
    // A second latch before reading is ignored.
    pit.io_write(PORT_CMD, 0x00, ticks_to_ns(200));
    assert_eq!(pit.io_read(PORT_CH0, ticks_to_ns(300)), (900 & 0xff) as u8);
    assert_eq!(pit.io_read(PORT_CH0, ticks_to_ns(400)), (900 >> 8) as u8);
    // Unlatched again.
    assert_eq!(pit.io_read(PORT_CH0, ticks_to_ns(500)), (500 & 0xff) as u8);
}

#[test]
fn read_back_status_and_count() {
    let mut pit = Pit::new();
    program_ch0(&mut pit, 0x34, 1000, 0);
    // Read-back: latch count and status of channel 0.
    pit.io_write(PORT_CMD, 0xc2, ticks_to_ns(10));
    let st = pit.io_read(PORT_CH0, ticks_to_ns(20));
    assert_eq!(st, 0x80 | (3 << 4) | (2 << 1));
    assert_eq!(pit.io_read(PORT_CH0, ticks_to_ns(20)), (990 & 0xff) as u8);
    assert_eq!(pit.io_read(PORT_CH0, ticks_to_ns(20)), (990 >> 8) as u8);
    // Status only, after a control word: null count set, mode 0 OUT low.
    pit.io_write(PORT_CMD, 0x30, ticks_to_ns(30));
    pit.io_write(PORT_CMD, 0xe2, ticks_to_ns(30));
    assert_eq!(pit.io_read(PORT_CH0, ticks_to_ns(30)), 0x40 | (3 << 4));
}

#[test]
fn lsb_only_and_msb_only_access() {
    let mut pit = Pit::new();
    pit.io_write(PORT_CMD, 0x14, 0); // LSB only, mode 2
    pit.io_write(PORT_CH0, 200, 0);
    assert_eq!(pit.next_deadline(), Some(ticks_to_ns(200)));
    assert_eq!(pit.io_read(PORT_CH0, ticks_to_ns(50)), 150);
    pit.io_write(PORT_CMD, 0x24, 0); // MSB only
    pit.io_write(PORT_CH0, 2, 0);
    assert_eq!(pit.next_deadline(), Some(ticks_to_ns(512)));
    assert_eq!(pit.io_read(PORT_CH0, ticks_to_ns(256)), 1);
}

#[test]
fn port61_bits() {
    let mut pit = Pit::new();
    pit.io_write(PORT_61, 0xff, 0);
    assert_eq!(pit.io_read(PORT_61, 0) & 0xcf, 0x0f);
    let a = pit.io_read(PORT_61, 0) & 0x10;
    let b = pit.io_read(PORT_61, REFRESH_TOGGLE_NS) & 0x10;
    assert_ne!(a, b, "refresh toggle flips");
}

#[test]
fn edge_before_reprogram_is_not_lost() {
    let mut pit = Pit::new();
    program_ch0(&mut pit, 0x34, 100, 0);
    // The guest reprograms after an edge passed but before the VMM advanced.
    program_ch0(&mut pit, 0x34, 1000, ticks_to_ns(150));
    assert_eq!(pit.next_deadline(), Some(ticks_to_ns(100)));
    assert!(pit.advance(ticks_to_ns(151)));
    assert_eq!(pit.next_deadline(), Some(ticks_to_ns(1150)));
}

#[test]
fn state_round_trip() {
    let mut pit = Pit::new();
    program_ch0(&mut pit, 0x34, 4773, 10);
    pit.io_write(PORT_61, 0x03, 20);
    pit.io_write(PORT_CMD, 0xb0, 20);
    pit.io_write(PORT_CH2, 0x34, 30);
    pit.io_write(PORT_CMD, 0x00, 40);
    let json = serde_json::to_string(&pit.state()).unwrap();
    let back: PitState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, pit.state());
    let (a, b) = vm_device::persist::round_trip(&pit, ()).unwrap();
    assert_eq!(a, b);
    let mut r = <Pit as vm_device::Persist>::restore((), &back).unwrap();
    assert_eq!(r.state(), pit.state());
    assert_eq!(r.next_deadline(), pit.next_deadline());
    for port in [PORT_CH0, PORT_CH0, PORT_CH2, PORT_61] {
        assert_eq!(r.io_read(port, 5_000_000), pit.io_read(port, 5_000_000));
    }
    assert_eq!(r.advance(10_000_000), pit.advance(10_000_000));
}

#[test]
fn corrupt_state_does_not_panic() {
    let mut st = Pit::new().state();
    st.channels[0].mode = 2;
    st.channels[0].start_value = 0;
    st.channels[0].running_since = Some(u64::MAX - 1);
    st.channels[1].mode = 9;
    st.irq_next_tick = Some(0);
    let mut pit = <Pit as vm_device::Persist>::restore((), &st).unwrap();
    pit.advance(u64::MAX);
    pit.io_read(PORT_CH0, u64::MAX);
    pit.io_read(PORT_CH1, 0);
    pit.next_deadline();
}
