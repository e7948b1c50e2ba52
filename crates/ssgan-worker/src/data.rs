//! Opens the training images that a run config names.

use ssgan_data::{CifarDataset, FolderImages, Split, TrainImages};

use crate::config::{DataKind, RunConfig};
use crate::error::Result;

/// Opens `data.path` as the kind that `data.kind` names: the train split of CIFAR-10, or an
/// image folder served at the model's image size.
pub fn open_train_images(config: &RunConfig) -> Result<Box<dyn TrainImages>> {
    let path = &config.data.path;
    let images: Box<dyn TrainImages> = match config.data.kind {
        DataKind::Cifar10 => Box::new(CifarDataset::open(path, Split::Train)?),
        DataKind::ImageFolder => {
            let images = FolderImages::open(path, config.model.image_size())?;
            tracing::debug!(path = %path.display(), images = images.len(), "opened image folder");
            Box::new(images)
        }
    };
    Ok(images)
}
