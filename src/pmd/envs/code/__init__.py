"""Code environment: LiveCodeBench/HumanEval problems judged by running tests in the sandbox.

`environment` holds the Environment and its typed params, `loaders` the problem sources, `extract` finding code in
a reply, `judge` running the tests and wording the verdict, `harness` the program that runs inside the sandbox.
"""

from .environment import CodeEnvironment, CodeParams
from .extract import extract_code

__all__ = ["CodeEnvironment", "CodeParams", "extract_code"]
