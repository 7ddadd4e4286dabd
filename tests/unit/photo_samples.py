"""Photos with planted identifying metadata, for the photo de-identification tests and bench.

Metadata is written by other writers than the code under test (piexif for EXIF, Pillow's PNG
writer, pillow-heif); the few blocks no library writes (XMP, IPTC, COM segments, an ICC tag)
are spliced in by hand here, following their published layouts. Every planted value is a
distinctive byte string, so a byte search of the output finds any that survived.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import piexif
from PIL import Image, ImageCms, PngImagePlugin

SERIAL = b"SN-PLANTED-4711"
OWNER = b"Owner Planted Name"
DATE_ORIGINAL = b"2023:04:05 06:07:08"
DATE_CHANGED = b"2023:04:05 06:07:09"
DESCRIPTION = b"Patient Jane Planted"
MAKERNOTE = b"MAKERNOTE-PLANTED-0042"
LENS_SERIAL = b"LENS-PLANTED-0815"
# GPS latitude 55 deg 40' 47.11" as EXIF rationals; packed big-endian as piexif writes them.
GPS_LATITUDE = ((55, 1), (40, 1), (4711, 100))
GPS_BYTES = struct.pack(">6I", 55, 1, 40, 1, 4711, 100)
XMP_CREATOR = b"Xmp Planted Creator"
IPTC_BYLINE = b"Iptc Planted Byline"
COMMENT = b"Comment Planted Name"
PNG_AUTHOR = b"Png Planted Author"
PRIVATE_CHUNK_TEXT = b"Private Chunk Planted"
ICC_DEVICE_TEXT = b"ICC-SERIAL-PLANTED-99"
THUMBNAIL_MARK = (7, 201, 13)  # the thumbnail's flat colour, nowhere in the main image

PLANTED = {
    "serial": SERIAL, "owner": OWNER, "date original": DATE_ORIGINAL, "date changed": DATE_CHANGED,
    "description": DESCRIPTION, "makernote": MAKERNOTE, "lens serial": LENS_SERIAL, "gps latitude": GPS_BYTES,
    "xmp": XMP_CREATOR, "iptc": IPTC_BYLINE, "comment": COMMENT, "icc device": ICC_DEVICE_TEXT,
}


def pixels(seed: int = 0, size: tuple[int, int] = (96, 64)) -> np.ndarray:
    """A noisy RGB image (height, width, 3): compresses badly, so a pixel change shows."""
    rng = np.random.default_rng(seed)
    w, h = size
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def thumbnail_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), THUMBNAIL_MARK).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def exif_block(orientation: int = 1, thumbnail: bool = True) -> bytes:
    """``Exif\\0\\0`` + TIFF, by piexif: GPS, dates, serials, owner, MakerNote, IFD1 thumbnail."""
    exif = {
        "0th": {
            piexif.ImageIFD.Make: b"Planted Camera Co",
            piexif.ImageIFD.Model: b"Model X",
            piexif.ImageIFD.Orientation: orientation,
            piexif.ImageIFD.DateTime: DATE_CHANGED,
            piexif.ImageIFD.ImageDescription: DESCRIPTION,
        },
        "Exif": {
            piexif.ExifIFD.DateTimeOriginal: DATE_ORIGINAL,
            piexif.ExifIFD.BodySerialNumber: SERIAL,
            piexif.ExifIFD.CameraOwnerName: OWNER,
            piexif.ExifIFD.LensSerialNumber: LENS_SERIAL,
            piexif.ExifIFD.MakerNote: MAKERNOTE,
        },
        "GPS": {piexif.GPSIFD.GPSLatitudeRef: b"N", piexif.GPSIFD.GPSLatitude: GPS_LATITUDE},
        "1st": {},
        "thumbnail": None,
    }
    if thumbnail:
        exif["1st"] = {piexif.ImageIFD.JPEGInterchangeFormat: 0, piexif.ImageIFD.JPEGInterchangeFormatLength: 0}
        exif["thumbnail"] = thumbnail_jpeg()
    return piexif.dump(exif)


def xmp_packet() -> bytes:
    return (
        b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
        b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        b'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator>' + XMP_CREATOR
        + b"</dc:creator></rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end=\"w\"?>"
    )


def iptc_app13() -> bytes:
    """Photoshop 3.0 image resource 0x0404 holding IPTC-IIM record 2:80 (By-line)."""
    dataset = b"\x1c\x02\x50" + struct.pack(">H", len(IPTC_BYLINE)) + IPTC_BYLINE
    if len(dataset) % 2:
        dataset += b"\x00"
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", len(dataset)) + dataset
    return b"Photoshop 3.0\x00" + resource


def segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def icc_with_device_text() -> bytes:
    """sRGB (littlecms) plus a 'dmdd' tag holding a device serial, and a creation date set."""
    base = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    (count,) = struct.unpack_from(">I", base, 128)
    entries = [struct.unpack_from(">4sII", base, 132 + 12 * i) for i in range(count)]
    body = base[132 + 12 * count :]
    tag = b"text\x00\x00\x00\x00" + ICC_DEVICE_TEXT + b"\x00"
    tag += bytes(-len(tag) % 4)
    shift = 12
    new_entries = [(sig, off + shift, size) for sig, off, size in entries]
    data_start = 132 + 12 * (count + 1)
    pad = bytes(-(data_start + len(body)) % 4)
    new_entries.append((b"dmdd", data_start + len(body) + len(pad), len(tag)))
    header = bytearray(base[:128])
    header[24:36] = struct.pack(">6H", 2023, 4, 5, 6, 7, 8)
    table = struct.pack(">I", count + 1) + b"".join(struct.pack(">4sII", *e) for e in new_entries)
    profile = bytearray(bytes(header) + table + body + pad + tag)
    struct.pack_into(">I", profile, 0, len(profile))
    return bytes(profile)


def planted_jpeg(seed: int = 0, orientation: int = 1, size: tuple[int, int] = (96, 64), trailing: bytes = b"") -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(pixels(seed, size))
    image.save(buf, "JPEG", quality=90, exif=exif_block(orientation), icc_profile=icc_with_device_text())
    data = buf.getvalue()
    extra = (
        segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + xmp_packet())
        + segment(0xED, iptc_app13())
        + segment(0xFE, COMMENT)
    )
    return data[:2] + extra + data[2:] + trailing


def planted_png(seed: int = 0, orientation: int = 1, size: tuple[int, int] = (96, 64)) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", PNG_AUTHOR.decode())
    info.add_text("Comment", COMMENT.decode(), zip=True)
    info.add_itxt("XML:com.adobe.xmp", xmp_packet().decode())
    info.add(b"tIME", struct.pack(">HBBBBB", 2023, 4, 5, 6, 7, 8))
    info.add(b"prVt", PRIVATE_CHUNK_TEXT)
    buf = io.BytesIO()
    exif = exif_block(orientation, thumbnail=False)[6:]  # PNG eXIf holds the TIFF block without the Exif\0\0 header
    Image.fromarray(pixels(seed, size)).save(buf, "PNG", pnginfo=info, exif=exif, icc_profile=icc_with_device_text())
    return buf.getvalue()


def planted_heic(seed: int = 0, size: tuple[int, int] = (96, 64)) -> bytes:
    import pillow_heif

    heif = pillow_heif.from_pillow(Image.fromarray(pixels(seed, size)))
    buf = io.BytesIO()
    heif.save(buf, quality=-1, exif=exif_block(thumbnail=False), xmp=xmp_packet())
    return buf.getvalue()


def png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))
