#!/usr/bin/env python3
"""Fixtures for tests/infer_study_test.ts, with pydicom + nibabel + OpenCV (tools nobody on this project wrote).

  infer_study_fixtures.py oblique OUT_DIR [--slices N] [--rows R] [--cols C]
      writes an axial-ish CT series with a tilted, rotated ImageOrientationPatient, non-square pixels and
      non-square slices (so swapped axes show), named so that file order says nothing.
  infer_study_fixtures.py check NII SERIES_DIR PRED_BIN Z2 GH GW
      reads the .nii(.gz) with nibabel and compares it with what the DICOM series says (pydicom):
      * affine_err: max |affine - A| with A the voxel-to-RAS affine of the series in the RSNA / dcm2niix layout
        (i = column, j = Rows - 1 - row, k = slices from inferior to superior), built from IPP, IOP and PixelSpacing;
      * data_mismatch: voxels differing from the seed's mapping of the predicted labels PRED_BIN [Z2, GH, GW]
        (original slice z <- predicted slice z // 2, cranial first; cv2.resize INTER_NEAREST in plane) put in that
        layout;
      * world_mismatch: voxels whose value differs from the upsampled label at the DICOM pixel found from the
        voxel's world position through nibabel's affine (IPP / IOP / PixelSpacing of each slice), and
        world_offgrid the largest distance (in pixels / slices) of a voxel centre from a DICOM pixel centre.
      Prints JSON.
"""
import argparse
import json
import os
import sys

import cv2
import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def oblique(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--slices", type=int, default=9)
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--cols", type=int, default=24)
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    tilt, rot = np.deg2rad(12.0), np.deg2rad(25.0)
    rz = np.array([[np.cos(rot), -np.sin(rot), 0], [np.sin(rot), np.cos(rot), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    r = rz @ rx
    row_dir, col_dir, normal = r[:, 0], r[:, 1], r[:, 2]  # normal has +z: larger k is more superior
    dr, dc, dz = 0.7, 0.9, 1.25  # PixelSpacing = [between rows, between columns]
    p0 = np.array([-8.0, -11.0, 40.0])
    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(3)
    names = list(rng.permutation(a.slices) + 1)
    for k in range(a.slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.Modality = "CT"
        ds.PatientID = "oblique"
        ds.InstanceNumber = int(names[k])
        ds.ImagePositionPatient = [float(v) for v in p0 + k * dz * normal]
        ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [dr, dc]
        ds.SliceThickness = dz
        ds.Rows, ds.Columns = a.rows, a.cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = rng.integers(-1000, 2000, (a.rows, a.cols)).astype("<i2").tobytes()
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(os.path.join(a.out, f"{names[k]}.dcm"), write_like_original=False)


def check(nii, series_dir, pred_bin, z2, gh, gw):
    dss = [pydicom.dcmread(os.path.join(series_dir, f)) for f in os.listdir(series_dir) if f.endswith(".dcm")]
    dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))  # inferior first = NIfTI k order
    K, R, C = len(dss), int(dss[0].Rows), int(dss[0].Columns)
    iop = np.array([float(v) for v in dss[0].ImageOrientationPatient])
    row_dir, col_dir = iop[:3], iop[3:]
    dr, dc = (float(v) for v in dss[0].PixelSpacing)
    ipp = np.array([[float(v) for v in d.ImagePositionPatient] for d in dss])
    lps = np.zeros((4, 4))
    lps[:3, 0] = row_dir * dc
    lps[:3, 1] = -col_dir * dr
    lps[:3, 2] = (ipp[-1] - ipp[0]) / (K - 1)
    lps[:3, 3] = ipp[0] + (R - 1) * dr * col_dir
    lps[3, 3] = 1
    ref_affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps

    img = nib.load(nii)
    data = np.asarray(img.dataobj)
    pred = np.fromfile(pred_bin, np.uint8).reshape(z2, gh, gw)
    Z = K
    up = np.stack([cv2.resize(pred[z // 2], (C, R), interpolation=cv2.INTER_NEAREST) for z in range(Z)])
    want = up[::-1, ::-1, :].transpose(2, 1, 0)  # [i = column, j = Rows - 1 - row, k inferior first]
    out = {
        "shape": list(data.shape),
        "dtype": str(data.dtype),
        "sform_code": int(img.header["sform_code"]),
        "affine_err": float(np.abs(img.affine - ref_affine).max()),
        "data_mismatch": int((data != want).sum()) if data.shape == want.shape else -1,
    }
    # The world route: voxel centre -> RAS (nibabel) -> LPS -> DICOM slice and pixel.
    ii, jj, kk = np.meshgrid(np.arange(data.shape[0]), np.arange(data.shape[1]), np.arange(data.shape[2]), indexing="ij")
    vox = np.stack([ii.ravel(), jj.ravel(), kk.ravel(), np.ones(ii.size)])
    world = np.diag([-1.0, -1.0, 1.0, 1.0]) @ (img.affine @ vox)
    normal = np.cross(row_dir, col_dir)
    along = normal @ ipp.T  # slice positions on the normal, inferior first
    t = normal @ world[:3]
    s = np.rint((t - along[0]) / (along[1] - along[0])).astype(int)
    s = np.clip(s, 0, K - 1)
    rel = world[:3] - ipp[s].T
    r, c = (col_dir @ rel) / dr, (row_dir @ rel) / dc
    off = np.abs(t - along[s]) / abs(along[1] - along[0])
    out["world_offgrid"] = float(max(off.max(), np.abs(r - np.rint(r)).max(), np.abs(c - np.rint(c)).max()))
    ri, ci = np.rint(r).astype(int), np.rint(c).astype(int)
    inside = (ri >= 0) & (ri < R) & (ci >= 0) & (ci < C)
    zc = K - 1 - s  # cranial-first slice index of the volume the labels were predicted on
    got = data[ii.ravel(), jj.ravel(), kk.ravel()]
    exp = up[zc, np.clip(ri, 0, R - 1), np.clip(ci, 0, C - 1)]
    out["world_outside"] = int((~inside).sum())
    out["world_mismatch"] = int(((got != exp) & inside).sum())
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "oblique":
        oblique(sys.argv[2:])
    else:
        check(sys.argv[2], sys.argv[3], sys.argv[4], *(int(v) for v in sys.argv[5:8]))
