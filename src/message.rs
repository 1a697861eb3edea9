//! What travels on a queue.

/// An owned message that stages exchange over bounded queues.
///
/// The one method reports the payload size for the profiler's byte counts; the default (0)
/// means "not counted", so `impl Message for MyBatch {}` is enough to send a type.
pub trait Message: Send + 'static {
    /// Bytes of payload this message carries (heap buffers included).
    fn bytes(&self) -> usize {
        0
    }
}

macro_rules! fixed_size_message {
    ($($t:ty),*) => {$(
        impl Message for $t {
            fn bytes(&self) -> usize { std::mem::size_of::<$t>() }
        }
    )*};
}
fixed_size_message!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize, f32, f64, bool, ());

impl<T: Copy + Send + 'static> Message for Vec<T> {
    fn bytes(&self) -> usize {
        std::mem::size_of_val(self.as_slice())
    }
}

impl<T: Copy + Send + 'static> Message for Box<[T]> {
    fn bytes(&self) -> usize {
        std::mem::size_of_val(&**self)
    }
}

impl Message for String {
    fn bytes(&self) -> usize {
        self.len()
    }
}

impl<A: Message, B: Message> Message for (A, B) {
    fn bytes(&self) -> usize {
        self.0.bytes() + self.1.bytes()
    }
}
