//! `ndarray` views (feature `ndarray`): a locked [`Array`](crate::Array) as
//! an n-dimensional array in place, and a [`SharedMemory`] segment as one of
//! a given element type and shape, Python's
//! `np.ndarray(shape, dtype, buffer=shm.buf)`. The views are the shared
//! memory itself: nothing is copied.

use bytemuck::Pod;
use ndarray::{ArrayView, ArrayViewMut, IxDyn};

use crate::array::ArrayGuard;
use crate::error::SharedError;
use crate::shared_memory::SharedMemory;

/// The number of elements of `shape`, or an error if it overflows.
fn count(shape: &[usize]) -> Result<usize, SharedError> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| {
        SharedError::InvalidArgument(format!("the shape {shape:?} has more elements than memory can hold"))
    })
}

fn shape_error(shape: &[usize], e: ndarray::ShapeError) -> SharedError {
    SharedError::InvalidArgument(format!("cannot view the elements with shape {shape:?}: {e}"))
}

impl<T: Pod> ArrayGuard<T> {
    /// The locked elements as an n-dimensional array of `shape` (row-major,
    /// like NumPy's default), in place. An error when the shape does not
    /// hold exactly [`len`](slice::len) elements.
    ///
    /// ```
    /// let a = mp_shared::Array::from_slice(&[1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0])?;
    /// let g = a.lock()?;
    /// let m = g.view(&[2, 3])?;
    /// assert_eq!(m[[1, 0]], 4.0);
    /// assert!(g.view(&[4, 2]).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn view(&self, shape: &[usize]) -> Result<ArrayView<'_, T, IxDyn>, SharedError> {
        self.check_shape(shape)?;
        ArrayView::from_shape(IxDyn(shape), self).map_err(|e| shape_error(shape, e))
    }

    /// The locked elements as a writable n-dimensional array of `shape`, in
    /// place: writes are in the shared memory at once.
    ///
    /// ```
    /// let a = mp_shared::Array::<f64>::new(6)?;
    /// let mut g = a.lock()?;
    /// let mut m = g.view_mut(&[2, 3])?;
    /// m.index_axis_mut(mp_shared::ndarray::Axis(0), 1).fill(1.5);
    /// drop(g);
    /// assert_eq!(a.to_vec(), [0.0, 0.0, 0.0, 1.5, 1.5, 1.5]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn view_mut(&mut self, shape: &[usize]) -> Result<ArrayViewMut<'_, T, IxDyn>, SharedError> {
        self.check_shape(shape)?;
        ArrayViewMut::from_shape(IxDyn(shape), self).map_err(|e| shape_error(shape, e))
    }

    fn check_shape(&self, shape: &[usize]) -> Result<(), SharedError> {
        let n = count(shape)?;
        if n != self.len() {
            return Err(SharedError::InvalidArgument(format!(
                "the shape {shape:?} holds {n} elements, but the array has {}",
                self.len()
            )));
        }
        Ok(())
    }
}

impl SharedMemory {
    /// The segment as an n-dimensional array of `T` and `shape` (row-major),
    /// in place: Python's `np.ndarray(shape, dtype, buffer=shm.buf)`. Like
    /// NumPy, it uses the first `shape.product() * size_of::<T>()` bytes; an
    /// error when the segment is smaller, closed, or not aligned for `T`.
    ///
    /// ```
    /// let mut shm = mp_shared::SharedMemory::create(None, 6 * 8)?;
    /// shm.ndarray_view_mut::<f64>(&[2, 3])?[[1, 2]] = 7.0;
    /// let other = mp_shared::SharedMemory::attach(shm.name())?; // in any process
    /// assert_eq!(other.ndarray_view::<f64>(&[2, 3])?.sum(), 7.0);
    /// assert!(other.ndarray_view::<f64>(&[7]).is_err()); // 56 bytes > 48
    /// # shm.unlink()?;
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn ndarray_view<T: Pod>(&self, shape: &[usize]) -> Result<ArrayView<'_, T, IxDyn>, SharedError> {
        let elems = self.prefix_of::<T>(count(shape)?)?;
        ArrayView::from_shape(IxDyn(shape), elems).map_err(|e| shape_error(shape, e))
    }

    /// [`ndarray_view`](SharedMemory::ndarray_view), writable. Writes by
    /// other handles and processes race with it as with
    /// [`as_mut_slice`](SharedMemory::as_mut_slice).
    ///
    /// ```
    /// let mut shm = mp_shared::SharedMemory::create(None, 4)?;
    /// shm.ndarray_view_mut::<u8>(&[2, 2])?.fill(1);
    /// assert_eq!(shm.as_slice(), [1; 4]);
    /// assert!(shm.ndarray_view_mut::<u32>(&[2]).is_err()); // 8 bytes > 4
    /// # shm.unlink()?;
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn ndarray_view_mut<T: Pod>(&mut self, shape: &[usize]) -> Result<ArrayViewMut<'_, T, IxDyn>, SharedError> {
        let elems = self.prefix_of_mut::<T>(count(shape)?)?;
        ArrayViewMut::from_shape(IxDyn(shape), elems).map_err(|e| shape_error(shape, e))
    }
}
