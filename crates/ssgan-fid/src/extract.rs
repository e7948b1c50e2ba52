//! Batched feature extraction over an image set, with a progress bar.

use std::io::IsTerminal;

use candle_core::{DType, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use tracing::debug;

use crate::error::{FidError, Result};
use crate::features::FeatureMatrix;
use crate::inception::{FeatureLayer, FidInception};
use crate::source::{ImageSource, RgbPlanes};

/// Images per forward pass when the caller does not choose (pytorch-fid's default).
pub const DEFAULT_BATCH_SIZE: usize = 50;

/// Runs [`FidInception`] over image sets in batches.
pub struct FeatureExtractor<'a> {
    model: &'a FidInception,
    batch_size: usize,
    progress: bool,
}

impl<'a> FeatureExtractor<'a> {
    /// Creates an extractor with [`DEFAULT_BATCH_SIZE`] and a progress bar on a terminal.
    pub fn new(model: &'a FidInception) -> Self {
        Self {
            model,
            batch_size: DEFAULT_BATCH_SIZE,
            progress: true,
        }
    }

    /// Sets the images per forward pass (at least 1). Memory grows linearly with it.
    pub fn with_batch_size(self, batch_size: usize) -> Self {
        Self {
            batch_size: batch_size.max(1),
            ..self
        }
    }

    /// Turns the progress bar on stderr on or off. It is never drawn when stderr is not a
    /// terminal.
    pub fn with_progress(self, progress: bool) -> Self {
        Self { progress, ..self }
    }

    /// Computes the `layer` features of every image of `source`, in order.
    ///
    /// Images may have any size, since each is resized to 299 x 299. Returns an
    /// [N, layer.dims()] matrix, the model's values widened exactly to f64.
    ///
    /// # Errors
    ///
    /// [`FidError::TooFewSamples`] for an empty source, and the source's read errors.
    pub fn extract(&self, source: &dyn ImageSource, layer: FeatureLayer) -> Result<FeatureMatrix> {
        let total = source.len();
        if total == 0 {
            return Err(FidError::TooFewSamples {
                what: "feature extraction",
                min: 1,
                actual: 0,
            });
        }
        let bar = self.progress_bar(total);
        let mut values = Vec::with_capacity(total * layer.dims());
        for start in (0..total).step_by(self.batch_size) {
            let end = (start + self.batch_size).min(total);
            let images = source.read(start..end)?;
            values.extend(self.batch_features(&images, layer)?);
            bar.inc((end - start) as u64);
            debug!(done = end, total, "extracted features");
        }
        bar.finish_and_clear();
        FeatureMatrix::new(total, layer.dims(), values)
    }

    /// Computes the `layer` features of a batch of images as row-major f64 values.
    pub fn batch_features(&self, images: &[RgbPlanes], layer: FeatureLayer) -> Result<Vec<f64>> {
        let input = self.network_input(images)?;
        let outputs = self.model.forward(&input)?;
        let features = outputs.layer(layer).to_dtype(DType::F64)?;
        Ok(features.flatten_all()?.to_vec1::<f64>()?)
    }

    /// Preprocesses each image on its own (their sizes may differ) and stacks them.
    fn network_input(&self, images: &[RgbPlanes]) -> Result<Tensor> {
        let mut inputs = Vec::with_capacity(images.len());
        for image in images {
            let unit = image
                .to_unit_tensor(self.model.dtype())?
                .to_device(self.model.device())?;
            inputs.push(self.model.preprocess(&unit)?);
        }
        Ok(Tensor::cat(&inputs, 0)?)
    }

    fn progress_bar(&self, total: usize) -> ProgressBar {
        if !self.progress || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total as u64);
        let template = "features {bar:30} {pos}/{len} images [{elapsed} < {eta}]";
        bar.set_style(ProgressStyle::with_template(template).expect("the template is valid"));
        bar
    }
}
