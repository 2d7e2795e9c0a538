"""The bundle's software bill of materials: CycloneDX 1.5 JSON, licences read from each wheel's own metadata."""

from __future__ import annotations

import uuid
import zipfile
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from models.presets import PRESETS
from models.trained_embedders import MANIFEST

# "License :: OSI Approved :: MIT License" -> MIT, for wheels that state their licence only as a classifier.
_CLASSIFIERS = {
    "MIT License": "MIT",
    "BSD License": "BSD-3-Clause",
    "Apache Software License": "Apache-2.0",
    "Python Software Foundation License": "PSF-2.0",
    "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "ISC License (ISCL)": "ISC",
    "GNU Library or Lesser General Public License (LGPL)": "LGPL-2.1-or-later",
    "The Unlicense (Unlicense)": "Unlicense",
}


def wheel_metadata(path: Path) -> dict[str, Any]:
    """The METADATA headers of a wheel (read from the zip, nothing is installed or run)."""
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        text = archive.read(name).decode("utf-8", errors="replace")
    return HeaderParser().parsestr(text)


def licence_of(path: Path) -> tuple[str, str]:
    """(licence, where it was read): License-Expression, else License, else a classifier; '' when none."""
    meta = wheel_metadata(path)
    if meta.get("License-Expression"):
        return meta["License-Expression"].strip(), "License-Expression"
    stated = (meta.get("License") or "").strip()
    if stated and "\n" not in stated and len(stated) < 80:  # some put the whole licence text here
        return stated, "License"
    for classifier in meta.get_all("Classifier") or []:
        if classifier.startswith("License ::"):
            last = classifier.split("::")[-1].strip()
            return _CLASSIFIERS.get(last, last), "Classifier"
    return "", ""


def component(entry: dict[str, Any], bundle: Path) -> dict[str, Any]:
    """One CycloneDX component for a locked wheel."""
    licence, where = licence_of(bundle / entry["path"])
    properties = [{"name": "ragtune:role", "value": entry["role"]}, {"name": "ragtune:file", "value": entry["path"]}]
    if not licence and entry["role"] == "model":
        # Model carriers state none; the licence is the upstream model's, recorded with the preset.
        preset = PRESETS[entry["preset"]]
        licence, where = preset.licence, f"upstream model licence (preset {preset.name})"
    properties.append({"name": "ragtune:licence-source", "value": where or "not stated in the wheel's metadata"})
    item: dict[str, Any] = {
        "type": "library",
        "bom-ref": f"{entry['name']}@{entry['version']}",
        "name": entry["name"],
        "version": entry["version"],
        "purl": f"pkg:pypi/{entry['name']}@{entry['version']}",
        "hashes": [{"alg": "SHA-256", "content": entry["sha256"]}],
        "licenses": [_licence(licence, where == "License-Expression")] if licence else [],
        "properties": properties,
    }
    if entry["source"].startswith(("http://", "https://", "file://")):
        item["externalReferences"] = [{"type": "distribution", "url": entry["source"]}]
    else:
        item["properties"].append({"name": "ragtune:source", "value": entry["source"]})
    return item


def _licence(text: str, spdx: bool) -> dict[str, Any]:
    # Only License-Expression is SPDX by definition; free text (License, classifiers) goes in `license.name`.
    return {"expression": text} if spdx else {"license": {"name": text}}


def model_components(presets: list[str]) -> list[dict[str, Any]]:
    """The assembled model files: what the far side verifies after putting the pieces together."""
    items = []
    for name in presets:
        preset = PRESETS[name]
        item: dict[str, Any] = {
            "type": "machine-learning-model",
            "bom-ref": f"model:{name}",
            "name": name,
            "description": preset.description,
            "licenses": [_licence(preset.licence, False)] if preset.licence else [],
        }
        if preset.sha256:
            item["hashes"] = [{"alg": "SHA-256", "content": preset.sha256}]
        items.append(item)
    return items


def embedder_components(embedders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trained embedders carried as folders; the hash is their manifest's, which lists every file's sha256."""
    items = []
    for embedder in embedders:
        manifest = next(f for f in embedder["files"] if f["path"].endswith(f"/{MANIFEST}"))
        base = PRESETS.get(embedder["base"])
        item: dict[str, Any] = {
            "type": "machine-learning-model",
            "bom-ref": f"embedder:{embedder['name']}",
            "name": embedder["name"],
            "description": f"embedder trained on the user's documents from {embedder['base'] or 'an unrecorded base'}",
            "hashes": [{"alg": "SHA-256", "content": manifest["sha256"]}],
            # A fine-tuned model carries its base model's licence.
            "licenses": [_licence(base.licence, False)] if base and base.licence else [],
            "properties": [
                {"name": "ragtune:file", "value": manifest["path"]},
                {"name": "ragtune:base", "value": embedder["base"]},
            ],
        }
        items.append(item)
    return items


def make_sbom(lock: dict[str, Any], bundle: Path) -> dict[str, Any]:
    """CycloneDX 1.5; the serial number is derived from the lock so an unchanged bundle gets the same file."""
    embedders = lock.get("embedders", [])
    hashes = [e["sha256"] for e in lock["files"]] + [f["sha256"] for e in embedders for f in e["files"]]
    serial = uuid.uuid5(uuid.NAMESPACE_URL, "ragtune-bundle:" + "".join(hashes))
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        "metadata": {
            "component": {"type": "application", "name": "ragtune", "version": lock["ragtune"]},
            "properties": [
                {"name": "ragtune:target", "value": lock["target"]},
                {"name": "ragtune:python", "value": lock["python"]["tag"]},
                {"name": "ragtune:platform", "value": lock["python"]["platform"]},
            ],
        },
        "components": [component(e, bundle) for e in lock["files"]]
        + model_components([p["name"] for p in lock["presets"]])
        + embedder_components(embedders),
    }
