#!/usr/bin/env python3
"""Writes a small synthetic axial CT series with pydicom (tools nobody on this project wrote), for the DICOM
reader tests. Usage: dicom_fixtures.py OUT_DIR [--slices N] [--order caudal-first|cranial-first]
[--pixel int16|uint12] [--series UID] [--modality CT] [--size 48]

Writes OUT_DIR/<name>.dcm with shuffled numeric names (so file order says nothing) and OUT_DIR/../truth_<series
tail>.bin: the stored values, int16/uint16 little-endian, slice 0 the most cranial (highest z).
"""
import argparse
import os
import random

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--slices", type=int, default=5)
ap.add_argument("--order", default="caudal-first")
ap.add_argument("--pixel", default="int16")
ap.add_argument("--series", default=None)
ap.add_argument("--study", default="1.2.826.0.1.3680043.8.498.1")
ap.add_argument("--modality", default="CT")
ap.add_argument("--size", type=int, default=48)
ap.add_argument("--truth", default=None)
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)
series = a.series or generate_uid()
rng = np.random.default_rng(abs(hash(series)) % 2**32)
n, size = a.slices, a.size
zs = [-100.0 + 2.5 * k for k in range(n)]  # k = 0 is the most caudal
signed = a.pixel == "int16"
vols = []
for k in range(n):
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    hu = np.where(r < size * 0.3, 700 + 10 * k, np.where(r < size * 0.45, 40, -1000)).astype(np.int32)
    hu = hu + rng.integers(-20, 21, hu.shape)
    if signed:
        hu[0, :] = -3024  # padding below -2048 HU: stored values go negative with intercept -1024
        stored = (hu + 1024).astype(np.int16)
    else:
        stored = np.clip(hu + 1024, 0, 4095).astype(np.uint16)
    vols.append(stored)
names = list(range(1, n + 1))
random.Random(series).shuffle(names)
order = list(range(n)) if a.order == "caudal-first" else list(range(n))[::-1]
for i, k in enumerate(order):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = a.study
    ds.SeriesInstanceUID = series
    ds.Modality = a.modality
    ds.PatientID = "phantom"
    ds.InstanceNumber = i + 1
    ds.ImagePositionPatient = [-60.0, -60.0, zs[k]]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.SliceThickness = 2.5
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16 if signed else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = vols[k].tobytes()
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.save_as(os.path.join(a.out, f"{names[i]}.dcm"), write_like_original=False)
truth = np.stack(vols[::-1])  # most cranial (highest z) first
truth.astype("<i2" if signed else "<u2").tofile(a.truth or os.path.join(a.out, "..", "truth.bin"))
print(series)
