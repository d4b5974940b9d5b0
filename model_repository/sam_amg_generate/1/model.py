"""sam_amg_generate: SamAutomaticMaskGenerator over BLS calls to sam_decoder / sam_encoder."""

import numpy as np
import triton_python_backend_utils as pb_utils

from samserve.contract import (
    AMG_IMAGE,
    AMG_OPTIONS,
    AMG_ORIGINAL_SIZE,
    AMG_OUTPUTS,
    DECODER,
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    EMBEDDINGS,
    ENCODER,
    ENCODER_INPUT,
    MODEL_ID,
    model_id_tensor,
)
from samserve.core.amg_options import AmgOptions
from samserve.core.errors import SamServeError
from samserve.triton.amg_generator import AutomaticMaskGenerator, Cancelled
from samserve.triton.bls import bls
from samserve.triton.model_config import model_info
from samserve.triton.responses import ModelMismatch, error_response, refuse_other_models, tensors_response


def _encoder(encoder: str, model_id: str):
    def encode(images):
        emb, made_by = bls(encoder, {ENCODER_INPUT: images}, [EMBEDDINGS, MODEL_ID])
        refuse_other_models(made_by, model_id)  # sam_encoder reloaded apart from this model
        return emb

    return encode


def _decoder(decoder: str, model_id: str):
    made_by = model_id_tensor(model_id)

    def decode(embedding, point_coords, point_labels, mask_input=None):
        b, low = len(point_coords), 4 * embedding.shape[-1]
        if mask_input is None:
            mask = (np.zeros((1, b, 1, low, low), np.float32), np.zeros((1, b), np.float32))
        else:  # SAM 2's mask-to-mask refinement
            mask = (np.ascontiguousarray(mask_input[None], np.float32), np.ones((1, b), np.float32))
        inputs = dict(zip(DECODER_INPUTS, (embedding, point_coords[None], point_labels[None], *mask), strict=True))
        masks, iou = bls(decoder, {**inputs, MODEL_ID: made_by}, list(DECODER_OUTPUTS))
        return masks[0], iou[0]

    return decode


class TritonPythonModel:
    def initialize(self, args):
        info = model_info(args)
        self.model_id, self.family = info.model_id, info.family
        self.generator = AutomaticMaskGenerator(
            info, _encoder(info.triton(ENCODER), info.model_id), _decoder(info.triton(DECODER), info.model_id)
        )

    def _generate(self, request):
        made_by = pb_utils.get_input_tensor_by_name(request, MODEL_ID)
        refuse_other_models(None if made_by is None else made_by.as_numpy(), self.model_id)
        emb = pb_utils.get_input_tensor_by_name(request, EMBEDDINGS).as_numpy()
        image_t = pb_utils.get_input_tensor_by_name(request, AMG_IMAGE)
        size = pb_utils.get_input_tensor_by_name(request, AMG_ORIGINAL_SIZE).as_numpy().reshape(-1)
        raw = pb_utils.get_input_tensor_by_name(request, AMG_OPTIONS).as_numpy().reshape(-1)[0]
        opts = AmgOptions.from_json(raw).for_family(self.family)
        original_size = (int(size[0]), int(size[1]))
        image = None if image_t is None else image_t.as_numpy()[0]
        if image is not None and image.shape[:2] != original_size:
            raise ValueError(f"image is {image.shape[:2]}, original_size says {original_size}")
        if image is None and opts.crop_n_layers > 0:
            raise ValueError("crop_n_layers > 0 needs the image input")
        masks = self.generator.generate(
            opts, original_size, image=image, embedding=emb.astype(np.float16), cancelled=request.is_cancelled
        )
        rles = np.array([np.asarray(r, dtype="<u4").tobytes() for r in masks.rles], dtype=np.object_).reshape(-1)
        arrays = (
            rles,
            masks.boxes.astype(np.int64).reshape(-1, 4),
            masks.predicted_iou.astype(np.float32),
            masks.stability_score.astype(np.float32),
            masks.point_coords.astype(np.float64).reshape(-1, 2),
            masks.crop_boxes.astype(np.int64).reshape(-1, 4),
        )  # in AMG_OUTPUTS' order, each with the request's batch dimension added
        return tensors_response({name: a[None] for name, a in zip(AMG_OUTPUTS, arrays, strict=True)})

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._generate(request))
            except Cancelled as exc:
                responses.append(error_response(str(exc), "CANCELLED"))
            except ModelMismatch as exc:
                responses.append(error_response(str(exc), "UNAVAILABLE"))
            except (SamServeError, ValueError, RuntimeError) as exc:
                responses.append(error_response(str(exc)))
        return responses
