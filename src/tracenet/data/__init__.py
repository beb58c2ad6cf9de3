"""Datasets (COCO, LVIS, the synthetic default), download, transforms and click simulation."""
