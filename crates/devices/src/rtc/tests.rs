use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

/// 2026-11-22 13:45:07 UTC, a Sunday.
const T0: u64 = 1_795_305_600 + 13 * 3600 + 45 * 60 + 7;

fn at(secs: u64, ns: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, ns)
}

fn rd(rtc: &mut Rtc, r: u8, now: SystemTime) -> u8 {
    rtc.write_port(PORT_INDEX, r, now);
    rtc.read_port(PORT_DATA, now)
}

fn wr(rtc: &mut Rtc, r: u8, v: u8, now: SystemTime) {
    rtc.write_port(PORT_INDEX, r, now);
    rtc.write_port(PORT_DATA, v, now);
}

fn time_regs(rtc: &mut Rtc, now: SystemTime) -> [u8; 8] {
    [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32].map(|r| rd(rtc, r, now))
}

#[test]
fn reads_host_utc_in_bcd_24h() {
    let mut rtc = Rtc::new();
    let now = at(T0, 500_000_000);
    assert_eq!(
        time_regs(&mut rtc, now),
        [0x07, 0x45, 0x13, 0x01, 0x22, 0x11, 0x26, 0x20]
    );
    assert_eq!(rd(&mut rtc, reg::STATUS_A, now), 0x26);
    assert_eq!(rd(&mut rtc, reg::STATUS_B, now), 0x02);
    assert_eq!(rd(&mut rtc, reg::STATUS_D, now), 0x80);
    // The clock follows the host.
    assert_eq!(rd(&mut rtc, reg::SECONDS, at(T0 + 60, 0)), 0x07);
    assert_eq!(rd(&mut rtc, reg::MINUTES, at(T0 + 60, 0)), 0x46);
}

#[test]
fn binary_and_12_hour_modes() {
    let mut rtc = Rtc::new();
    let now = at(T0, 0);
    wr(&mut rtc, reg::STATUS_B, 0x06, now);
    assert_eq!(time_regs(&mut rtc, now), [7, 45, 13, 1, 22, 11, 26, 20]);
    wr(&mut rtc, reg::STATUS_B, 0x00, now); // BCD, 12-hour
    assert_eq!(rd(&mut rtc, reg::HOURS, now), 0x81, "1 PM");
    let midnight = at(1_795_305_600, 0);
    assert_eq!(rd(&mut rtc, reg::HOURS, midnight), 0x12, "12 AM");
    assert_eq!(
        rd(&mut rtc, reg::HOURS, at(1_795_305_600 + 12 * 3600, 0)),
        0x92,
        "12 PM"
    );
    wr(&mut rtc, reg::STATUS_B, 0x04, now); // binary, 12-hour
    assert_eq!(rd(&mut rtc, reg::HOURS, now), 0x81);
}

#[test]
fn uip_window_before_each_update() {
    let mut rtc = Rtc::new();
    assert_eq!(rd(&mut rtc, reg::STATUS_A, at(T0, 999_700_000)) & 0x80, 0);
    assert_eq!(
        rd(&mut rtc, reg::STATUS_A, at(T0, 999_800_000)) & 0x80,
        0x80
    );
    assert_eq!(rd(&mut rtc, reg::STATUS_A, at(T0 + 1, 0)) & 0x80, 0);
    // UIP is read-only.
    wr(&mut rtc, reg::STATUS_A, 0xa6, at(T0, 0));
    assert_eq!(rd(&mut rtc, reg::STATUS_A, at(T0, 0)), 0x26);
    // Never set while updates are stopped.
    wr(&mut rtc, reg::STATUS_B, 0x82, at(T0, 0));
    assert_eq!(rd(&mut rtc, reg::STATUS_A, at(T0, 999_900_000)) & 0x80, 0);
}

/// Linux's mc146818_get_time: wait for UIP clear, read the time, and retry if
/// UIP rose or the seconds changed meanwhile.
#[test]
fn linux_read_with_uip_is_consistent() {
    let mut rtc = Rtc::new();
    let mut t = Duration::new(T0, 999_500_000);
    let mut step = |d: u64| {
        t += Duration::from_micros(d);
        UNIX_EPOCH + t
    };
    let result = loop {
        if rd(&mut rtc, reg::STATUS_A, step(100)) & 0x80 != 0 {
            continue;
        }
        let sec = rd(&mut rtc, reg::SECONDS, step(50));
        let regs = time_regs(&mut rtc, step(50));
        if rd(&mut rtc, reg::STATUS_A, step(50)) & 0x80 != 0
            || rd(&mut rtc, reg::SECONDS, step(10)) != sec
        {
            continue;
        }
        break regs;
    };
    assert!(result == [0x07, 0x45, 0x13, 0x01, 0x22, 0x11, 0x26, 0x20] || result[0] == 0x08);
    assert_eq!(result[1..], [0x45, 0x13, 0x01, 0x22, 0x11, 0x26, 0x20]);
}

/// Linux's mc146818_set_time: SET and divider reset, write the fields, restore.
#[test]
fn guest_sets_time_and_it_keeps_running() {
    let mut rtc = Rtc::new();
    let now = at(T0, 300_000_000);
    let b = rd(&mut rtc, reg::STATUS_B, now);
    wr(&mut rtc, reg::STATUS_B, b | 0x80, now);
    let a = rd(&mut rtc, reg::STATUS_A, now);
    wr(&mut rtc, reg::STATUS_A, a | 0x60, now);
    // 1999-12-31 23:59:50
    for (r, v) in [
        (0x09, 0x99),
        (0x08, 0x12),
        (0x07, 0x31),
        (0x04, 0x23),
        (0x02, 0x59),
        (0x00, 0x50),
        (0x32, 0x19),
    ] {
        wr(&mut rtc, r, v, now);
    }
    // Stopped: the written values stay while time passes.
    let later = at(T0 + 5, 0);
    assert_eq!(rd(&mut rtc, reg::SECONDS, later), 0x50);
    wr(&mut rtc, reg::STATUS_B, b, later);
    assert_eq!(
        rd(&mut rtc, reg::SECONDS, later),
        0x50,
        "divider still in reset"
    );
    wr(&mut rtc, reg::STATUS_A, a, later);
    // Running again from the written time.
    let after = at(T0 + 5 + 15, 0);
    assert_eq!(
        time_regs(&mut rtc, after),
        [0x05, 0x00, 0x00, 0x07, 0x01, 0x01, 0x00, 0x20]
    );
}

#[test]
fn single_register_write_while_running() {
    let mut rtc = Rtc::new();
    let now = at(T0, 0);
    wr(&mut rtc, reg::HOURS, 0x02, now);
    assert_eq!(
        time_regs(&mut rtc, at(T0 + 1, 0)),
        [0x08, 0x45, 0x02, 0x01, 0x22, 0x11, 0x26, 0x20]
    );
}

#[test]
fn invalid_time_is_ignored() {
    let mut rtc = Rtc::new();
    let now = at(T0, 0);
    wr(&mut rtc, reg::STATUS_B, 0x82, now);
    wr(&mut rtc, reg::MONTH, 0x13, now);
    wr(&mut rtc, reg::STATUS_B, 0x02, now);
    assert_eq!(rd(&mut rtc, reg::MONTH, at(T0 + 1, 0)), 0x11);
    wr(&mut rtc, reg::DAY_OF_MONTH, 0x3a, now); // not BCD
    assert_eq!(rd(&mut rtc, reg::DAY_OF_MONTH, now), 0x22);
}

#[test]
fn status_c_flags_and_set_clears_uie() {
    let mut rtc = Rtc::new();
    wr(&mut rtc, reg::STATUS_A, 0x20, at(T0, 0)); // no periodic flag
    wr(&mut rtc, reg::STATUS_B, 0x12, at(T0, 0)); // UIE
    assert_eq!(rd(&mut rtc, reg::STATUS_C, at(T0, 100)), 0);
    assert_eq!(rd(&mut rtc, reg::STATUS_C, at(T0, 900_000_000)), 0);
    assert_eq!(rd(&mut rtc, reg::STATUS_C, at(T0 + 1, 0)), 0x90);
    assert_eq!(rd(&mut rtc, reg::STATUS_C, at(T0 + 1, 1)), 0, "read clears");
    wr(&mut rtc, reg::STATUS_B, 0x02, at(T0 + 1, 0));
    assert_eq!(
        rd(&mut rtc, reg::STATUS_C, at(T0 + 3, 0)),
        0x10,
        "UF without IRQF"
    );
    wr(&mut rtc, reg::STATUS_B, 0x92, at(T0 + 3, 0));
    assert_eq!(rd(&mut rtc, reg::STATUS_B, at(T0 + 3, 0)), 0x82);
    // C and D are read-only.
    wr(&mut rtc, reg::STATUS_C, 0xff, at(T0, 0));
    wr(&mut rtc, reg::STATUS_D, 0x00, at(T0, 0));
    assert_eq!(rd(&mut rtc, reg::STATUS_D, at(T0, 0)), 0x80);
}

#[test]
fn index_port_nmi_bit_and_ram() {
    let mut rtc = Rtc::new();
    let now = at(T0, 0);
    rtc.write_port(PORT_INDEX, 0x80 | 0x40, now);
    assert!(rtc.nmi_disabled());
    rtc.write_port(PORT_DATA, 0x5a, now);
    rtc.write_port(PORT_INDEX, 0x40, now);
    assert!(!rtc.nmi_disabled());
    assert_eq!(rtc.read_port(PORT_DATA, now), 0x5a);
    assert_eq!(rtc.read_port(PORT_INDEX, now), 0xff);
    for r in 0x0e..0x80u8 {
        if r != reg::CENTURY {
            wr(&mut rtc, r, r ^ 0xa5, now);
        }
    }
    for r in 0x0e..0x80u8 {
        if r != reg::CENTURY {
            assert_eq!(rd(&mut rtc, r, now), r ^ 0xa5);
        }
    }
    // Alarm registers are plain RAM.
    wr(&mut rtc, reg::SECONDS_ALARM, 0xc0, now);
    assert_eq!(rd(&mut rtc, reg::SECONDS_ALARM, now), 0xc0);
}

#[test]
fn memory_size_bytes() {
    let mut rtc = Rtc::new();
    let now = at(T0, 0);
    rtc.set_memory_size(512 << 20, 2 << 30);
    assert_eq!(
        [rd(&mut rtc, 0x15, now), rd(&mut rtc, 0x16, now)],
        [0x80, 0x02]
    );
    assert_eq!(
        [rd(&mut rtc, 0x17, now), rd(&mut rtc, 0x18, now)],
        [0xff, 0xff]
    );
    assert_eq!(
        [rd(&mut rtc, 0x30, now), rd(&mut rtc, 0x31, now)],
        [0xff, 0xff]
    );
    let above16 = u16::from_le_bytes([rd(&mut rtc, 0x34, now), rd(&mut rtc, 0x35, now)]);
    assert_eq!(u64::from(above16) << 16, (512 - 16) << 20);
    let high = [0x5b, 0x5c, 0x5d].map(|r| rd(&mut rtc, r, now));
    assert_eq!(
        u32::from_le_bytes([high[0], high[1], high[2], 0]),
        (2 << 30) >> 16
    );
    let sum: u16 = (0x10..=0x2d).map(|r| u16::from(rd(&mut rtc, r, now))).sum();
    assert_eq!(
        u16::from_be_bytes([rd(&mut rtc, 0x2e, now), rd(&mut rtc, 0x2f, now)]),
        sum
    );
    // Small guest: 8 MiB.
    rtc.set_memory_size(8 << 20, 0);
    assert_eq!(
        u16::from_le_bytes([rd(&mut rtc, 0x17, now), rd(&mut rtc, 0x18, now)]),
        7 * 1024
    );
    assert_eq!([rd(&mut rtc, 0x34, now), rd(&mut rtc, 0x35, now)], [0, 0]);
    assert_eq!([0x5b, 0x5c, 0x5d].map(|r| rd(&mut rtc, r, now)), [0, 0, 0]);
}

#[derive(Clone)]
struct FakeClock(Arc<Mutex<SystemTime>>);

impl WallClock for FakeClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

#[test]
fn bus_adapter_ports() {
    let clock = FakeClock(Arc::new(Mutex::new(at(T0, 0))));
    let mut dev = RtcDevice::with_clock(Rtc::new(), clock.clone());
    let mut b = [0u8; 1];
    dev.write(0, &[reg::MINUTES]);
    dev.read(1, &mut b);
    assert_eq!(b[0], 0x45);
    *clock.0.lock().unwrap() = at(T0 + 120, 0);
    dev.read(1, &mut b);
    assert_eq!(b[0], 0x47);
    dev.read(0, &mut b);
    assert_eq!(b[0], 0xff);
    let mut wide = [0u8; 2];
    dev.read(1, &mut wide);
    assert_eq!(wide, [0x47, 0xff]);
    dev.read(2, &mut b);
    assert_eq!(b[0], 0xff);
    dev.rtc_mut().set_memory_size(64 << 20, 0);
    dev.write(0, &[0x34]);
    dev.read(1, &mut b);
    assert_eq!(b[0], 0x00);
    dev.write(0, &[0x35]);
    dev.read(1, &mut b);
    assert_eq!(b[0], 0x03);
    assert!(!dev.rtc().nmi_disabled());
}

#[test]
fn state_round_trip() {
    let mut rtc = Rtc::new();
    let now = at(T0, 0);
    wr(&mut rtc, reg::YEAR, 0x30, now);
    wr(&mut rtc, 0x40, 0x77, now);
    rtc.set_memory_size(256 << 20, 0);
    rtc.write_port(PORT_INDEX, 0x82, now);
    let (a, b) = vm_device::persist::round_trip(&rtc, ()).unwrap();
    assert_eq!(a, b);
    let back: RtcState = serde_json::from_str(&a).unwrap();
    let mut r = Rtc::restore((), &back).unwrap();
    let later = at(T0 + 3600, 0);
    assert_eq!(time_regs(&mut r, later), time_regs(&mut rtc, later));
    assert_eq!(rd(&mut r, reg::YEAR, later), 0x30);
    assert_eq!(rd(&mut r, 0x40, later), 0x77);
    // A truncated CMOS image is refused, naming the device.
    let short = RtcState {
        cmos: vec![1, 2, 3],
        ..back
    };
    let e = Rtc::restore((), &short).expect_err("refused");
    assert!(e.to_string().starts_with("rtc: CMOS RAM of 3 bytes"), "{e}");
}

#[test]
fn pre_epoch_host_clock_is_handled() {
    let mut rtc = Rtc::new();
    let now = UNIX_EPOCH - Duration::from_secs(86_400);
    assert_eq!(
        time_regs(&mut rtc, now),
        [0, 0, 0, 0x04, 0x31, 0x12, 0x69, 0x19]
    );
}

#[test]
fn periodic_interrupt_flag() {
    let mut rtc = Rtc::new();
    let t = |ns: u32| at(T0, ns);
    wr(&mut rtc, reg::STATUS_B, 0x42, t(0)); // PIE, rate 6 = 1024 Hz
    assert!(!rtc.irq_level(t(100)));
    let d = rtc.next_irq_in(t(100)).unwrap();
    // Boundaries of 1024 Hz: 976562.5 ns apart; the first after 100 ns.
    assert_eq!(d, Duration::from_nanos(976_563 - 100));
    assert!(!rtc.irq_level(t(976_562)));
    assert!(rtc.irq_level(t(976_563)));
    assert_eq!(rtc.next_irq_in(t(976_563)), None, "already high");
    assert_eq!(rd(&mut rtc, reg::STATUS_C, t(976_600)), 0xc0);
    assert!(!rtc.irq_level(t(976_700)));
    // PF is set even with PIE clear; only IRQF needs the enable.
    wr(&mut rtc, reg::STATUS_B, 0x02, t(976_700));
    assert!(!rtc.irq_level(t(2_000_000)));
    assert_eq!(rd(&mut rtc, reg::STATUS_C, t(2_000_000)), 0x40);
    // Rate 0 stops it.
    wr(&mut rtc, reg::STATUS_B, 0x42, t(2_000_000));
    assert!(rtc.next_irq_in(t(2_000_000)).is_some());
    wr(&mut rtc, reg::STATUS_A, 0x20, t(2_000_000));
    assert_eq!(rtc.next_irq_in(t(2_000_000)), None);
    assert!(!rtc.irq_level(t(999_000_000)));
}

#[test]
fn alarm_interrupt_flag() {
    let mut rtc = Rtc::new();
    let now = at(T0, 250_000_000); // 13:45:07.25
    wr(&mut rtc, reg::STATUS_A, 0x20, now); // no periodic flag
    wr(&mut rtc, reg::HOURS_ALARM, 0x13, now);
    wr(&mut rtc, reg::MINUTES_ALARM, 0x45, now);
    wr(&mut rtc, reg::SECONDS_ALARM, 0x10, now);
    wr(&mut rtc, reg::STATUS_B, 0x22, now); // AIE
    assert!(!rtc.irq_level(now));
    assert_eq!(rtc.next_irq_in(now), Some(Duration::from_millis(2750)));
    assert!(!rtc.irq_level(at(T0 + 2, 999_999_999)));
    assert!(rtc.irq_level(at(T0 + 3, 0)));
    assert_eq!(
        rd(&mut rtc, reg::STATUS_C, at(T0 + 3, 1)),
        0xb0,
        "IRQF | AF | UF"
    );
    // Next day, same time.
    assert_eq!(
        rtc.next_irq_in(at(T0 + 3, 1)).map(|d| d.as_secs()),
        Some(86_399)
    );
    // Wildcard hours and minutes: every minute at :30.
    wr(&mut rtc, reg::HOURS_ALARM, 0xff, now);
    wr(&mut rtc, reg::MINUTES_ALARM, 0xc0, now);
    wr(&mut rtc, reg::SECONDS_ALARM, 0x30, now);
    assert_eq!(
        rtc.next_irq_in(at(T0 + 3, 0)),
        Some(Duration::from_secs(20))
    );
    // An impossible alarm never fires.
    wr(&mut rtc, reg::HOURS_ALARM, 0x25, now);
    assert_eq!(rtc.next_irq_in(at(T0 + 3, 0)), None);
    // Stopped clock: no events.
    wr(&mut rtc, reg::STATUS_B, 0xa2, now);
    assert_eq!(rtc.next_irq_in(now), None);
}

#[derive(Default)]
struct Line(Mutex<Vec<bool>>);

impl vm_device::IrqLine for Line {
    fn set_level(&self, level: bool) {
        self.0.lock().unwrap().push(level);
    }
}

#[test]
fn device_drives_irq8_for_update_interrupts() {
    let clock = FakeClock(Arc::new(Mutex::new(at(T0, 400_000_000))));
    let line = Arc::new(Line::default());
    let mut dev = RtcDevice::with_clock(Rtc::new(), clock.clone()).with_irq(line.clone());
    // The guest enables update-ended interrupts and clears C (Linux does so).
    dev.write(0, &[reg::STATUS_A]);
    dev.write(1, &[0x20]);
    dev.write(0, &[reg::STATUS_B]);
    dev.write(1, &[0x12]);
    dev.write(0, &[reg::STATUS_C]);
    let mut b = [0u8];
    dev.read(1, &mut b);
    assert_eq!(dev.poll(), Some(Duration::from_millis(600)));
    assert!(line.0.lock().unwrap().is_empty());
    *clock.0.lock().unwrap() = at(T0 + 1, 0);
    assert_eq!(dev.poll(), None);
    assert_eq!(*line.0.lock().unwrap(), vec![true]);
    dev.write(0, &[reg::STATUS_C]);
    dev.read(1, &mut b);
    assert_eq!(b[0], 0x90);
    assert_eq!(*line.0.lock().unwrap(), vec![true, false]);
    assert_eq!(dev.poll(), Some(Duration::from_secs(1)));
}

#[test]
fn device_state_round_trips_with_its_irq_level() {
    let clock = FakeClock(Arc::new(Mutex::new(at(T0, 400_000_000))));
    let line = Arc::new(Line::default());
    let mut dev = RtcDevice::with_clock(Rtc::new(), clock.clone()).with_irq(line.clone());
    dev.write(0, &[reg::STATUS_B]);
    dev.write(1, &[0x12]); // update-ended interrupts on
    *clock.0.lock().unwrap() = at(T0 + 1, 0);
    dev.poll();
    assert_eq!(*line.0.lock().unwrap(), vec![true]);
    let args = || RtcArgs {
        clock: clock.clone(),
        irq: Some(line.clone() as Arc<dyn IrqLine>),
    };
    let (a, b) = vm_device::persist::round_trip(&dev, args()).unwrap();
    assert_eq!(a, b);
    assert!(a.contains("\"irq_out\":true"), "{a}");
    // The restored device knows its line is high: reading C lowers it.
    let mut r = RtcDevice::restore(args(), &dev.save()).unwrap();
    r.write(0, &[reg::STATUS_C]);
    let mut v = [0u8];
    r.read(1, &mut v);
    assert_eq!(*line.0.lock().unwrap(), vec![true, false]);
}
