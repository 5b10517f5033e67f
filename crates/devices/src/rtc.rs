//! CMOS RTC (in progress)
