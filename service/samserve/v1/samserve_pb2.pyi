from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MaskFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MASK_FORMAT_UNSPECIFIED: _ClassVar[MaskFormat]
    MASK_FORMAT_COCO_RLE: _ClassVar[MaskFormat]
    MASK_FORMAT_UNCOMPRESSED_RLE: _ClassVar[MaskFormat]
    MASK_FORMAT_PNG: _ClassVar[MaskFormat]
    MASK_FORMAT_PACKED_BITS: _ClassVar[MaskFormat]
    MASK_FORMAT_POLYGONS: _ClassVar[MaskFormat]

class SessionMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_MODE_UNSPECIFIED: _ClassVar[SessionMode]
    SESSION_MODE_WINDOW: _ClassVar[SessionMode]
    SESSION_MODE_FULL: _ClassVar[SessionMode]

class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECTION_UNSPECIFIED: _ClassVar[Direction]
    DIRECTION_FORWARD: _ClassVar[Direction]
    DIRECTION_BACKWARD: _ClassVar[Direction]
    DIRECTION_BOTH: _ClassVar[Direction]
MASK_FORMAT_UNSPECIFIED: MaskFormat
MASK_FORMAT_COCO_RLE: MaskFormat
MASK_FORMAT_UNCOMPRESSED_RLE: MaskFormat
MASK_FORMAT_PNG: MaskFormat
MASK_FORMAT_PACKED_BITS: MaskFormat
MASK_FORMAT_POLYGONS: MaskFormat
SESSION_MODE_UNSPECIFIED: SessionMode
SESSION_MODE_WINDOW: SessionMode
SESSION_MODE_FULL: SessionMode
DIRECTION_UNSPECIFIED: Direction
DIRECTION_FORWARD: Direction
DIRECTION_BACKWARD: Direction
DIRECTION_BOTH: Direction

class ImageSize(_message.Message):
    __slots__ = ("height", "width")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("image", "return_embedding", "model")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    RETURN_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    return_embedding: bool
    model: str
    def __init__(self, image: _Optional[bytes] = ..., return_embedding: _Optional[bool] = ..., model: _Optional[str] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("data", "shape", "dtype")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    def __init__(self, data: _Optional[bytes] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("image_id", "original_size", "input_size", "cached", "model_id", "embedding")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    original_size: ImageSize
    input_size: ImageSize
    cached: bool
    model_id: str
    embedding: Embedding
    def __init__(self, image_id: _Optional[str] = ..., original_size: _Optional[_Union[ImageSize, _Mapping]] = ..., input_size: _Optional[_Union[ImageSize, _Mapping]] = ..., cached: _Optional[bool] = ..., model_id: _Optional[str] = ..., embedding: _Optional[_Union[Embedding, _Mapping]] = ...) -> None: ...

class EmbedManyResult(_message.Message):
    __slots__ = ("index", "status", "message", "embedded")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDED_FIELD_NUMBER: _ClassVar[int]
    index: int
    status: str
    message: str
    embedded: EmbedResponse
    def __init__(self, index: _Optional[int] = ..., status: _Optional[str] = ..., message: _Optional[str] = ..., embedded: _Optional[_Union[EmbedResponse, _Mapping]] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y", "label")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    label: int
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., label: _Optional[int] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x0", "y0", "x1", "y1")
    X0_FIELD_NUMBER: _ClassVar[int]
    Y0_FIELD_NUMBER: _ClassVar[int]
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    x0: float
    y0: float
    x1: float
    y1: float
    def __init__(self, x0: _Optional[float] = ..., y0: _Optional[float] = ..., x1: _Optional[float] = ..., y1: _Optional[float] = ...) -> None: ...

class MaskInput(_message.Message):
    __slots__ = ("data", "height", "width")
    DATA_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    height: int
    width: int
    def __init__(self, data: _Optional[bytes] = ..., height: _Optional[int] = ..., width: _Optional[int] = ...) -> None: ...

class Prompt(_message.Message):
    __slots__ = ("points", "box", "mask_input", "mask_input_id")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    MASK_INPUT_FIELD_NUMBER: _ClassVar[int]
    MASK_INPUT_ID_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[Point]
    box: Box
    mask_input: MaskInput
    mask_input_id: str
    def __init__(self, points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., mask_input: _Optional[_Union[MaskInput, _Mapping]] = ..., mask_input_id: _Optional[str] = ...) -> None: ...

class SegmentRequest(_message.Message):
    __slots__ = ("image", "image_id", "prompts", "multimask_output", "mask_format", "return_low_res_logits", "model", "polygon_tolerance", "keep_low_res_logits")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    MULTIMASK_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    MASK_FORMAT_FIELD_NUMBER: _ClassVar[int]
    RETURN_LOW_RES_LOGITS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    POLYGON_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    KEEP_LOW_RES_LOGITS_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    image_id: str
    prompts: _containers.RepeatedCompositeFieldContainer[Prompt]
    multimask_output: bool
    mask_format: MaskFormat
    return_low_res_logits: bool
    model: str
    polygon_tolerance: float
    keep_low_res_logits: bool
    def __init__(self, image: _Optional[bytes] = ..., image_id: _Optional[str] = ..., prompts: _Optional[_Iterable[_Union[Prompt, _Mapping]]] = ..., multimask_output: _Optional[bool] = ..., mask_format: _Optional[_Union[MaskFormat, str]] = ..., return_low_res_logits: _Optional[bool] = ..., model: _Optional[str] = ..., polygon_tolerance: _Optional[float] = ..., keep_low_res_logits: _Optional[bool] = ...) -> None: ...

class CocoRle(_message.Message):
    __slots__ = ("size", "counts")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    size: _containers.RepeatedScalarFieldContainer[int]
    counts: str
    def __init__(self, size: _Optional[_Iterable[int]] = ..., counts: _Optional[str] = ...) -> None: ...

class UncompressedRle(_message.Message):
    __slots__ = ("size", "counts")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    size: _containers.RepeatedScalarFieldContainer[int]
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, size: _Optional[_Iterable[int]] = ..., counts: _Optional[_Iterable[int]] = ...) -> None: ...

class Ring(_message.Message):
    __slots__ = ("xy",)
    XY_FIELD_NUMBER: _ClassVar[int]
    xy: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, xy: _Optional[_Iterable[int]] = ...) -> None: ...

class PolygonPart(_message.Message):
    __slots__ = ("exterior", "holes")
    EXTERIOR_FIELD_NUMBER: _ClassVar[int]
    HOLES_FIELD_NUMBER: _ClassVar[int]
    exterior: Ring
    holes: _containers.RepeatedCompositeFieldContainer[Ring]
    def __init__(self, exterior: _Optional[_Union[Ring, _Mapping]] = ..., holes: _Optional[_Iterable[_Union[Ring, _Mapping]]] = ...) -> None: ...

class Polygons(_message.Message):
    __slots__ = ("parts",)
    PARTS_FIELD_NUMBER: _ClassVar[int]
    parts: _containers.RepeatedCompositeFieldContainer[PolygonPart]
    def __init__(self, parts: _Optional[_Iterable[_Union[PolygonPart, _Mapping]]] = ...) -> None: ...

class Mask(_message.Message):
    __slots__ = ("height", "width", "coco_rle", "uncompressed_rle", "png", "packed_bits", "polygons")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    COCO_RLE_FIELD_NUMBER: _ClassVar[int]
    UNCOMPRESSED_RLE_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    PACKED_BITS_FIELD_NUMBER: _ClassVar[int]
    POLYGONS_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    coco_rle: CocoRle
    uncompressed_rle: UncompressedRle
    png: bytes
    packed_bits: bytes
    polygons: Polygons
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., coco_rle: _Optional[_Union[CocoRle, _Mapping]] = ..., uncompressed_rle: _Optional[_Union[UncompressedRle, _Mapping]] = ..., png: _Optional[bytes] = ..., packed_bits: _Optional[bytes] = ..., polygons: _Optional[_Union[Polygons, _Mapping]] = ...) -> None: ...

class LowResLogits(_message.Message):
    __slots__ = ("data", "height", "width")
    DATA_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    height: int
    width: int
    def __init__(self, data: _Optional[bytes] = ..., height: _Optional[int] = ..., width: _Optional[int] = ...) -> None: ...

class PromptResult(_message.Message):
    __slots__ = ("masks", "iou_predictions", "low_res_logits", "low_res_logits_ids")
    MASKS_FIELD_NUMBER: _ClassVar[int]
    IOU_PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    LOW_RES_LOGITS_FIELD_NUMBER: _ClassVar[int]
    LOW_RES_LOGITS_IDS_FIELD_NUMBER: _ClassVar[int]
    masks: _containers.RepeatedCompositeFieldContainer[Mask]
    iou_predictions: _containers.RepeatedScalarFieldContainer[float]
    low_res_logits: _containers.RepeatedCompositeFieldContainer[LowResLogits]
    low_res_logits_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, masks: _Optional[_Iterable[_Union[Mask, _Mapping]]] = ..., iou_predictions: _Optional[_Iterable[float]] = ..., low_res_logits: _Optional[_Iterable[_Union[LowResLogits, _Mapping]]] = ..., low_res_logits_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class SegmentResponse(_message.Message):
    __slots__ = ("image_id", "original_size", "cached", "results")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    original_size: ImageSize
    cached: bool
    results: _containers.RepeatedCompositeFieldContainer[PromptResult]
    def __init__(self, image_id: _Optional[str] = ..., original_size: _Optional[_Union[ImageSize, _Mapping]] = ..., cached: _Optional[bool] = ..., results: _Optional[_Iterable[_Union[PromptResult, _Mapping]]] = ...) -> None: ...

class AmgOptions(_message.Message):
    __slots__ = ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh", "stability_score_offset", "box_nms_thresh", "crop_n_layers", "crop_nms_thresh", "crop_overlap_ratio", "crop_n_points_downscale_factor", "min_mask_region_area", "use_m2m", "multimask_output", "mask_threshold")
    POINTS_PER_SIDE_FIELD_NUMBER: _ClassVar[int]
    POINTS_PER_BATCH_FIELD_NUMBER: _ClassVar[int]
    PRED_IOU_THRESH_FIELD_NUMBER: _ClassVar[int]
    STABILITY_SCORE_THRESH_FIELD_NUMBER: _ClassVar[int]
    STABILITY_SCORE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    BOX_NMS_THRESH_FIELD_NUMBER: _ClassVar[int]
    CROP_N_LAYERS_FIELD_NUMBER: _ClassVar[int]
    CROP_NMS_THRESH_FIELD_NUMBER: _ClassVar[int]
    CROP_OVERLAP_RATIO_FIELD_NUMBER: _ClassVar[int]
    CROP_N_POINTS_DOWNSCALE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    MIN_MASK_REGION_AREA_FIELD_NUMBER: _ClassVar[int]
    USE_M2M_FIELD_NUMBER: _ClassVar[int]
    MULTIMASK_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    MASK_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    points_per_side: int
    points_per_batch: int
    pred_iou_thresh: float
    stability_score_thresh: float
    stability_score_offset: float
    box_nms_thresh: float
    crop_n_layers: int
    crop_nms_thresh: float
    crop_overlap_ratio: float
    crop_n_points_downscale_factor: int
    min_mask_region_area: int
    use_m2m: bool
    multimask_output: bool
    mask_threshold: float
    def __init__(self, points_per_side: _Optional[int] = ..., points_per_batch: _Optional[int] = ..., pred_iou_thresh: _Optional[float] = ..., stability_score_thresh: _Optional[float] = ..., stability_score_offset: _Optional[float] = ..., box_nms_thresh: _Optional[float] = ..., crop_n_layers: _Optional[int] = ..., crop_nms_thresh: _Optional[float] = ..., crop_overlap_ratio: _Optional[float] = ..., crop_n_points_downscale_factor: _Optional[int] = ..., min_mask_region_area: _Optional[int] = ..., use_m2m: _Optional[bool] = ..., multimask_output: _Optional[bool] = ..., mask_threshold: _Optional[float] = ...) -> None: ...

class GenerateMasksRequest(_message.Message):
    __slots__ = ("image", "image_id", "options", "output_format", "model", "polygon_tolerance")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    POLYGON_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    image_id: str
    options: AmgOptions
    output_format: MaskFormat
    model: str
    polygon_tolerance: float
    def __init__(self, image: _Optional[bytes] = ..., image_id: _Optional[str] = ..., options: _Optional[_Union[AmgOptions, _Mapping]] = ..., output_format: _Optional[_Union[MaskFormat, str]] = ..., model: _Optional[str] = ..., polygon_tolerance: _Optional[float] = ...) -> None: ...

class PointXY(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class MaskRecord(_message.Message):
    __slots__ = ("segmentation", "bbox", "area", "predicted_iou", "stability_score", "point_coords", "crop_box")
    SEGMENTATION_FIELD_NUMBER: _ClassVar[int]
    BBOX_FIELD_NUMBER: _ClassVar[int]
    AREA_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_IOU_FIELD_NUMBER: _ClassVar[int]
    STABILITY_SCORE_FIELD_NUMBER: _ClassVar[int]
    POINT_COORDS_FIELD_NUMBER: _ClassVar[int]
    CROP_BOX_FIELD_NUMBER: _ClassVar[int]
    segmentation: Mask
    bbox: _containers.RepeatedScalarFieldContainer[int]
    area: int
    predicted_iou: float
    stability_score: float
    point_coords: _containers.RepeatedCompositeFieldContainer[PointXY]
    crop_box: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, segmentation: _Optional[_Union[Mask, _Mapping]] = ..., bbox: _Optional[_Iterable[int]] = ..., area: _Optional[int] = ..., predicted_iou: _Optional[float] = ..., stability_score: _Optional[float] = ..., point_coords: _Optional[_Iterable[_Union[PointXY, _Mapping]]] = ..., crop_box: _Optional[_Iterable[int]] = ...) -> None: ...

class GenerateMasksResponse(_message.Message):
    __slots__ = ("image_id", "original_size", "cached", "masks")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    MASKS_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    original_size: ImageSize
    cached: bool
    masks: _containers.RepeatedCompositeFieldContainer[MaskRecord]
    def __init__(self, image_id: _Optional[str] = ..., original_size: _Optional[_Union[ImageSize, _Mapping]] = ..., cached: _Optional[bool] = ..., masks: _Optional[_Iterable[_Union[MaskRecord, _Mapping]]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelDescription(_message.Message):
    __slots__ = ("name", "model_id", "family", "model_type", "input_size", "prompts", "outputs", "returns_embeddings", "is_default", "precision", "runtime", "tracks_video")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    RETURNS_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    TRACKS_VIDEO_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_id: str
    family: str
    model_type: str
    input_size: ImageSize
    prompts: _containers.RepeatedScalarFieldContainer[str]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    returns_embeddings: bool
    is_default: bool
    precision: str
    runtime: str
    tracks_video: bool
    def __init__(self, name: _Optional[str] = ..., model_id: _Optional[str] = ..., family: _Optional[str] = ..., model_type: _Optional[str] = ..., input_size: _Optional[_Union[ImageSize, _Mapping]] = ..., prompts: _Optional[_Iterable[str]] = ..., outputs: _Optional[_Iterable[str]] = ..., returns_embeddings: _Optional[bool] = ..., is_default: _Optional[bool] = ..., precision: _Optional[str] = ..., runtime: _Optional[str] = ..., tracks_video: _Optional[bool] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "default_model")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelDescription]
    default_model: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelDescription, _Mapping]]] = ..., default_model: _Optional[str] = ...) -> None: ...

class StartVideoSessionRequest(_message.Message):
    __slots__ = ("model", "mode", "video")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    model: str
    mode: SessionMode
    video: bytes
    def __init__(self, model: _Optional[str] = ..., mode: _Optional[_Union[SessionMode, str]] = ..., video: _Optional[bytes] = ...) -> None: ...

class VideoSessionLimits(_message.Message):
    __slots__ = ("max_frames", "max_objects", "max_bytes", "max_points_per_prompt")
    MAX_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_POINTS_PER_PROMPT_FIELD_NUMBER: _ClassVar[int]
    max_frames: int
    max_objects: int
    max_bytes: int
    max_points_per_prompt: int
    def __init__(self, max_frames: _Optional[int] = ..., max_objects: _Optional[int] = ..., max_bytes: _Optional[int] = ..., max_points_per_prompt: _Optional[int] = ...) -> None: ...

class VideoSession(_message.Message):
    __slots__ = ("session_id", "model_id", "mode", "num_frames", "video_size", "object_ids", "bytes_held", "expires_at_unix", "limits", "frame_ids")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    VIDEO_SIZE_FIELD_NUMBER: _ClassVar[int]
    OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_HELD_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    FRAME_IDS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    model_id: str
    mode: SessionMode
    num_frames: int
    video_size: ImageSize
    object_ids: _containers.RepeatedScalarFieldContainer[int]
    bytes_held: int
    expires_at_unix: float
    limits: VideoSessionLimits
    frame_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_id: _Optional[str] = ..., model_id: _Optional[str] = ..., mode: _Optional[_Union[SessionMode, str]] = ..., num_frames: _Optional[int] = ..., video_size: _Optional[_Union[ImageSize, _Mapping]] = ..., object_ids: _Optional[_Iterable[int]] = ..., bytes_held: _Optional[int] = ..., expires_at_unix: _Optional[float] = ..., limits: _Optional[_Union[VideoSessionLimits, _Mapping]] = ..., frame_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AddFramesRequest(_message.Message):
    __slots__ = ("session_id", "image", "frame_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    image: bytes
    frame_id: str
    def __init__(self, session_id: _Optional[str] = ..., image: _Optional[bytes] = ..., frame_id: _Optional[str] = ...) -> None: ...

class VideoSessionRef(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class AddPromptRequest(_message.Message):
    __slots__ = ("session_id", "frame_index", "object_id", "points", "box", "keep_old_points", "mask_format", "polygon_tolerance")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    KEEP_OLD_POINTS_FIELD_NUMBER: _ClassVar[int]
    MASK_FORMAT_FIELD_NUMBER: _ClassVar[int]
    POLYGON_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    frame_index: int
    object_id: int
    points: _containers.RepeatedCompositeFieldContainer[Point]
    box: Box
    keep_old_points: bool
    mask_format: MaskFormat
    polygon_tolerance: float
    def __init__(self, session_id: _Optional[str] = ..., frame_index: _Optional[int] = ..., object_id: _Optional[int] = ..., points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., keep_old_points: _Optional[bool] = ..., mask_format: _Optional[_Union[MaskFormat, str]] = ..., polygon_tolerance: _Optional[float] = ...) -> None: ...

class PropagateRequest(_message.Message):
    __slots__ = ("session_id", "start_frame", "direction", "max_frames", "object_ids", "mask_format", "polygon_tolerance")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    START_FRAME_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAMES_FIELD_NUMBER: _ClassVar[int]
    OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    MASK_FORMAT_FIELD_NUMBER: _ClassVar[int]
    POLYGON_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    start_frame: int
    direction: Direction
    max_frames: int
    object_ids: _containers.RepeatedScalarFieldContainer[int]
    mask_format: MaskFormat
    polygon_tolerance: float
    def __init__(self, session_id: _Optional[str] = ..., start_frame: _Optional[int] = ..., direction: _Optional[_Union[Direction, str]] = ..., max_frames: _Optional[int] = ..., object_ids: _Optional[_Iterable[int]] = ..., mask_format: _Optional[_Union[MaskFormat, str]] = ..., polygon_tolerance: _Optional[float] = ...) -> None: ...

class VideoObjectMask(_message.Message):
    __slots__ = ("object_id", "mask", "object_score", "box", "has_output")
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    OBJECT_SCORE_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    HAS_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    object_id: int
    mask: Mask
    object_score: float
    box: Box
    has_output: bool
    def __init__(self, object_id: _Optional[int] = ..., mask: _Optional[_Union[Mask, _Mapping]] = ..., object_score: _Optional[float] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., has_output: _Optional[bool] = ...) -> None: ...

class VideoFrameResult(_message.Message):
    __slots__ = ("frame_index", "objects")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    objects: _containers.RepeatedCompositeFieldContainer[VideoObjectMask]
    def __init__(self, frame_index: _Optional[int] = ..., objects: _Optional[_Iterable[_Union[VideoObjectMask, _Mapping]]] = ...) -> None: ...

class VideoFrameResults(_message.Message):
    __slots__ = ("frames", "session")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[VideoFrameResult]
    session: VideoSession
    def __init__(self, frames: _Optional[_Iterable[_Union[VideoFrameResult, _Mapping]]] = ..., session: _Optional[_Union[VideoSession, _Mapping]] = ...) -> None: ...

class RemoveObjectRequest(_message.Message):
    __slots__ = ("session_id", "object_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    object_id: int
    def __init__(self, session_id: _Optional[str] = ..., object_id: _Optional[int] = ...) -> None: ...

class ClearPromptsRequest(_message.Message):
    __slots__ = ("session_id", "frame_index", "object_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    frame_index: int
    object_id: int
    def __init__(self, session_id: _Optional[str] = ..., frame_index: _Optional[int] = ..., object_id: _Optional[int] = ...) -> None: ...

class CloseVideoSessionResponse(_message.Message):
    __slots__ = ("existed",)
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    def __init__(self, existed: _Optional[bool] = ...) -> None: ...
