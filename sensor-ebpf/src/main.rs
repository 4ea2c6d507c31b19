#![no_std]
#![no_main]
//! Kernel programs (work in progress: see issue 4).

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
