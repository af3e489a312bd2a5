"""One generation engine for every mode: request -> conditioning -> start latents -> loop -> images."""
from .engine import Engine
from .jobs import GenerationQueue, Job
from .request import GenerationRequest, GenerationResult, RequestError

__all__ = ["Engine", "GenerationQueue", "GenerationRequest", "GenerationResult", "Job", "RequestError"]
