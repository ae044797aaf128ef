"""Tell what uploaded audio bytes are from their content alone.

The type comes from libmagic (``python-magic``) looking at the bytes; a filename, an HTTP
``Content-Type`` or a client's claimed type is never consulted, so a renamed PNG is refused
however it was labelled.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

import magic

from parley.domain.errors import InvalidArgument, Reason

__all__ = ["ACCEPTED_AUDIO_TYPES", "AudioType", "sniff"]


class AudioType(StrEnum):
    """The audio containers Parley accepts (docs/api.md, ``SendVoiceMessage``)."""

    WAV = "wav"
    MP3 = "mp3"
    OGG = "ogg"
    WEBM = "webm"
    M4A = "m4a"
    FLAC = "flac"


#: libmagic MIME type → accepted container. Several spellings exist across libmagic versions
#: (``audio/x-wav`` in Debian 12's file 5.44, ``audio/wav`` elsewhere). WebM files are reported as
#: ``video/webm`` whatever they hold (libmagic does not look inside), and MP4 files with a generic
#: brand (``isom``, ``mp42``) as ``video/mp4``; both are accepted here and the decoder uses their
#: audio stream. Ogg holding Opus, Vorbis or FLAC is ``audio/ogg``; Ogg video (``video/ogg``) is not.
_MIME_TO_TYPE: Mapping[str, AudioType] = MappingProxyType(
    {
        "audio/x-wav": AudioType.WAV,
        "audio/wav": AudioType.WAV,
        "audio/wave": AudioType.WAV,
        "audio/vnd.wave": AudioType.WAV,
        "audio/mpeg": AudioType.MP3,
        "audio/mp3": AudioType.MP3,
        "audio/ogg": AudioType.OGG,
        "audio/opus": AudioType.OGG,
        "video/webm": AudioType.WEBM,
        "audio/webm": AudioType.WEBM,
        "audio/x-m4a": AudioType.M4A,
        "audio/mp4": AudioType.M4A,
        "video/mp4": AudioType.M4A,
        "audio/flac": AudioType.FLAC,
        "audio/x-flac": AudioType.FLAC,
    }
)

#: What the error message offers instead, in the order of docs/api.md.
ACCEPTED_AUDIO_TYPES: tuple[AudioType, ...] = tuple(AudioType)


def sniff(data: bytes) -> AudioType:
    """Return the container type of ``data`` (a whole uploaded file, any size in bytes).

    Only the bytes are examined (libmagic reads at most its own ``bytes_max`` prefix, 7 MiB in
    file 5.44), so the call is cheap and safe to run on the event loop.

    Raises:
        InvalidArgument: reason ``EMPTY_AUDIO`` when ``data`` is empty; reason
            ``UNSUPPORTED_AUDIO`` when the content is not one of wav, mp3, ogg (Opus/Vorbis), webm,
            m4a (MP4 audio) or flac, with ``metadata["detected_type"]`` the MIME type libmagic saw.
    """
    if not data:
        raise InvalidArgument("audio is empty", reason=Reason.EMPTY_AUDIO)
    mime = magic.from_buffer(data, mime=True)
    audio_type = _MIME_TO_TYPE.get(mime)
    if audio_type is None:
        accepted = ", ".join(t.value for t in ACCEPTED_AUDIO_TYPES)
        raise InvalidArgument(
            f"unsupported audio: the content is {mime}; send one of {accepted}",
            reason=Reason.UNSUPPORTED_AUDIO,
            metadata={"detected_type": mime},
        )
    return audio_type
