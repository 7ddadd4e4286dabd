"""MetaImage written for grand-challenge containers and read from them, against SimpleITK (an
independent implementation), and hostile files a vendor could write."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from lightbox.sandbox.packaging_mha import mha_file_limit, read_mha, write_mha
from lightbox.sandbox.safeio import HostileOutput, Unreadable

sitk = pytest.importorskip("SimpleITK")

SHAPE = (3, 5, 7)  # slices, rows, columns: all different, so a swapped axis shows


def _volume(dtype):
    return (np.arange(np.prod(SHAPE)).reshape(SHAPE) - 40).astype(dtype)


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_what_we_write_simpleitk_reads_voxel_for_voxel_with_spacing(tmp_path, dtype):
    path = tmp_path / "image.mha"
    write_mha(path, _volume(dtype), [2.5, 0.7, 0.6])
    image = sitk.ReadImage(str(path))
    assert image.GetSize() == (7, 5, 3)  # x (columns), y (rows), z (slices)
    assert image.GetSpacing() == pytest.approx((0.6, 0.7, 2.5))
    assert image.GetOrigin() == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), _volume(dtype))


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float64])
def test_what_simpleitk_writes_we_read(tmp_path, compress, dtype):
    path = tmp_path / "mask.mha"
    sitk.WriteImage(sitk.GetImageFromArray(_volume(dtype)), str(path), useCompression=compress)
    got = read_mha(path.read_bytes(), SHAPE)
    np.testing.assert_array_equal(got, _volume(dtype))


def test_a_two_dimensional_mask_of_a_one_slice_image(tmp_path):
    path = tmp_path / "mask.mha"
    plane = np.eye(4, 6, dtype=np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(plane), str(path))
    np.testing.assert_array_equal(read_mha(path.read_bytes(), (1, 4, 6)), plane[None])


def _header(**fields):
    base = {"ObjectType": "Image", "NDims": "3", "DimSize": "7 5 3", "ElementType": "MET_UCHAR", "BinaryData": "True"}
    base.update(fields)
    lines = [f"{k} = {v}" for k, v in base.items() if v is not None]
    return ("\n".join(lines) + "\nElementDataFile = " + fields.pop("ElementDataFile", "LOCAL") + "\n").encode()


def _body(n=105):
    return bytes(n)


@pytest.mark.parametrize(
    "data, rule",
    [
        (_header(ElementDataFile="/data/truth/masks/a.raw") + _body(), "only ElementDataFile = LOCAL"),
        (_header(DimSize="7 5 4") + _body(140), "DimSize is not the case's image"),
        (_header(DimSize="5 7 3") + _body(), "DimSize is not the case's image"),  # rows and columns swapped
        (_header() + _body(104), "different number of voxels"),
        (_header() + _body(106), "different number of voxels"),
        (_header(ElementType="MET_LONG_LONG") + _body(), "ElementType must be one of"),
        (_header(ElementNumberOfChannels="3") + _body(315), "more than one channel"),
        (_header(BinaryData="False") + b"0 " * 105, "ASCII voxels"),
        (b"ObjectType = Image\n" * 2000, "repeats a header field"),
        (b"X" * 20000, "no ElementDataFile line"),
        (b"\xff\xfe = 3\nElementDataFile = LOCAL\n", "not ASCII"),
        (b"Patient = John Doe\nElementDataFile = LOCAL\n", "not a MetaImage field"),
        (_header(CompressedData="True") + b"not zlib at all", "not zlib"),
        (_header(NDims="4", DimSize="7 5 3 1") + _body(), "NDims must be 2 or 3"),
    ],
)
def test_malformed_files_are_one_unreadable_case_naming_the_rule(data, rule):
    with pytest.raises(Unreadable, match=rule) as caught:
        read_mha(data, SHAPE)
    assert not isinstance(caught.value, HostileOutput)
    assert "John" not in str(caught.value)


def test_a_zlib_bomb_is_refused_before_it_inflates_past_the_image():
    bomb = zlib.compress(bytes(1 << 26))  # 64 MiB of zeros in about 64 KiB
    with pytest.raises(HostileOutput, match="inflates past the 105 bytes"):
        read_mha(_header(CompressedData="True") + bomb, SHAPE)


def test_big_endian_voxels_are_read_as_numbers_not_bytes():
    values = _volume(np.int16)
    data = _header(ElementType="MET_SHORT", ElementByteOrderMSB="True") + values.astype(">i2").tobytes()
    np.testing.assert_array_equal(read_mha(data, SHAPE), values)


def test_the_scorers_file_limit_covers_a_double_mask_and_its_header():
    assert mha_file_limit(SHAPE) == (16 << 10) + 105 * 8
