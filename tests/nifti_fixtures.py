#!/usr/bin/env python3
"""RSNA-layout masks written by nibabel for the NIfTI tests.

  nifti_fixtures.py make SERIES_DIR OUT.nii   -> mask: bone voxels get label K - k (k = slice index from
                                                inferior), a 4x6 block at DICOM rows 0-3, columns 0-5 gets 9;
                                                data[i = column, j = Rows - 1 - row, k]; affine as dcm2niix
  nifti_fixtures.py dump FILE                 -> JSON {"shape", "affine", "data"} as nibabel reads FILE
"""
import json
import os
import sys

import nibabel as nib
import numpy as np
import pydicom


def make(series_dir, out):
    dss = [pydicom.dcmread(os.path.join(series_dir, f)) for f in os.listdir(series_dir) if f.endswith(".dcm")]
    dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))  # inferior first
    K = len(dss)
    rows, cols = int(dss[0].Rows), int(dss[0].Columns)
    data = np.zeros((cols, rows, K), np.uint8)
    for k, d in enumerate(dss):
        img = d.pixel_array.astype(np.int32)  # [row, col]
        lab = np.where(img > 1700, K - k, 0).astype(np.uint8)
        lab[0:4, 0:6] = 9
        data[:, :, k] = lab[::-1, :].T  # i = column, j = Rows - 1 - row
    dx, dy = (float(v) for v in dss[0].PixelSpacing[::-1])
    dz = float(dss[1].ImagePositionPatient[2]) - float(dss[0].ImagePositionPatient[2])
    x0, y0, z0 = (float(v) for v in dss[0].ImagePositionPatient)
    # LPS of voxel (i, j, k) = (x0 + i dx, y0 + (rows - 1 - j) dy, z0 + k dz); RAS negates x and y.
    aff = np.array([[-dx, 0, 0, -x0], [0, dy, 0, -(y0 + (rows - 1) * dy)], [0, 0, dz, z0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(data, aff)
    img.set_qform(aff, 1)
    img.set_sform(aff, 1)
    nib.save(img, out)


def dump(path):
    img = nib.load(path)
    a = np.asarray(img.dataobj)
    print(json.dumps({"shape": list(a.shape), "affine": img.affine.tolist(), "data": a.flatten(order="F").tolist()}))


if __name__ == "__main__":
    make(sys.argv[2], sys.argv[3]) if sys.argv[1] == "make" else dump(sys.argv[2])
