#![no_std]
//! Types shared by the kernel programs and userspace (work in progress: see issue 4).
