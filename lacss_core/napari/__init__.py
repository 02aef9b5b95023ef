"""LACSS in napari: an npe2 plugin (``pip install "lacss-core[napari]"``, then Plugins -> LACSS).

Contributions (``napari.yaml``):

- a reader: label TIFFs (``*_label.tif``, ``*_labels.tif``, ``*_masks.tif``) and weak-training
  foreground masks (``*_mask.tif``) as Labels layers; ImageJ/Fiji ROI zips as Shapes (areas) and
  Points (point ROIs) layers (:mod:`lacss_core.napari._reader`);
- a writer: a Labels layer to the label TIFF that ``lacss predict`` writes
  (:mod:`lacss_core.napari._writer`);
- the Segment widget (:class:`~lacss_core.napari._segment.SegmentWidget`) and the Train widget
  (:class:`~lacss_core.napari._train.TrainWidget`).

Nothing here imports napari or Keras until a widget is opened; see ``docs/napari.md``.
"""
