"""What PyTorch's and Python's terse errors usually mean in an answer, in a learner's words.

The engine adds one of these notes to an error when the exercise's own checks added none (with
exc.add_note in the exercise's call function). Keys are pieces of the error's text. Where an error has
several causes, the note says "a common cause", never "the cause".
"""
from __future__ import annotations

import difflib
import inspect
import linecache
import re
from pathlib import Path

import torch
from torch import nn

from .spec import get_exercise

_UNPACKED = (" A common cause: `logits, _ =\nmodel(x)`, written for a model that returns (logits, loss): the "
             "course's models return the logits\nalone, and unpacking one tensor splits it along its first axis.")
_SAME_DTYPE = ("Tensors of two dtypes met where one is needed (float32 and float64 in a matrix product, say).\n"
               "Common causes: a tensor made inside the answer (torch.zeros, torch.tensor, torch.randn...) is\n"
               "float32 unless given dtype=, and .float() gives float32 whatever it was (a mask turned into\n"
               "numbers, say). Make it with dtype=x.dtype, or convert with .to(x.dtype) (the checks run float64\n"
               "cases too).")
_VIEW_FIX = "write .reshape(...) where you wrote .view(...), with the same sizes."
# a name, an attribute or a number, with any subscripts and calls after it (lengths[:, None], x.sum(-1), .8, 2.). Its
# first part is a number with its dot or a bare name: with [\w.]+ there, a failed match tried every split of a long
# dotted chain (10 s at 32 parts, where this takes 3 ms)
_OPERAND = r"(?:\d*\.\d+|\d+\.(?!\w)|\w+)(?:\[[^\[\]]*\]|\([^()]*\))*(?:\.\w+(?:\[[^\[\]]*\]|\([^()]*\))*)*"

_BROADCAST = ("Elementwise operations need shapes that broadcast: compared from the last axis, each pair of\n"
              "sizes must be equal or one of them 1.")
_KEEPDIM = (" A common cause: a reduction (mean, sum, amax...) without\n"
            "keepdim=True drops its axis, so its result no longer lines up with the tensor it came from:\n"
            "keep the axis with keepdim=True (or add it back with [..., None]).")
_EXHAUSTED = ("A common cause: params is a generator (model.parameters() is one), and an earlier loop over it used\n"
              "it up, so a second loop sees nothing: make it a list once, at the top, params = list(params).")

TORCH_ERRORS = {
    "must match the size of tensor b": _BROADCAST + _KEEPDIM,
    "nested_tensorlist[0].empty()": "A torch function got an empty list of tensors.\n" + _EXHAUSTED,
    **dict.fromkeys(("to have the same dtype", "must have the same dtype", "expected scalar type Double but found Float",
                     "expected scalar type Float but found Double", "dtypes match, got"), _SAME_DTYPE),
    "Expected all tensors to be on the same device":
        "A tensor made inside the answer (torch.zeros, torch.arange, torch.tensor...) is created on the\n"
        "CPU unless given device=: make it with device=x.device, so that the answer runs on a GPU too.",
    "before Module.__init__() call":
        "An nn.Module subclass must call super().__init__() in its __init__, first: that call makes the\n"
        "registries that its parameters and submodules go into.",
    **dict.fromkeys(['is missing the required "forward" function', "_forward_unimplemented()"],
        "nn.Module calls the method named exactly forward: check its spelling, and that it is indented as\n"
        "a method of the class (not nested inside __init__)."),
    "Boolean value of Tensor with more than one value is ambiguous":
        "Python's if, and, or, not and bool() need a single True or False, and a tensor of several values\n"
        "is not one. To test whether an optional tensor was given, write `if mask is not None:` (with its\n"
        "own name: `if context is not None:`); to combine bool tensors element by element, &, | and ~;\n"
        "to reduce one, .any() or .all().",
    "a leaf Variable that requires grad is being used in an in-place operation":
        "A tensor that requires grad was changed in place (add_, mul_, -=, x[i] = ...) while autograd records.\n"
        "If it is an input of your function, build a new tensor instead (x * 2, not x.mul_(2)): an answer\n"
        "leaves its inputs as they were. A parameter changed on purpose (an init, an optimizer's step)\n"
        "is changed inside `with torch.no_grad():` (nn.init's functions do that themselves).",
    "Invalid axis identifier":
        "einops names each axis with a word, the words apart: '... i d, ... j d -> ... i j'. Letters run\n"
        "together ('...id,...jd->...ij') are torch.einsum's syntax, another function.",
    "device() received an invalid combination of arguments - got (NoneType)":
        "torch.device(None) is not a device. A device argument of None means the default device: pass it on as it\n"
        "is (torch.ones(..., device=device) accepts None), or take an input's, x.device.",
    "Torch not compiled with CUDA enabled":
        "A tensor was made on cuda, which this machine does not have. Take the device from the arguments\n"
        "(device=None means the default one) or from an input (x.device), never a fixed device= of the answer's.",
    "input tensor must have at least 2 dimensions":
        "tril and triu keep a triangle of a matrix, so they need one: make the (T, T) tensor first,\n"
        "torch.ones(T, T, ...), then take its triangle.",
    "forward() got an unexpected keyword argument 'training'":
        "A module follows its model's mode itself (model.train(), model.eval()): call it with its inputs alone,\n"
        "self.dropout(w), self.encoder(ids, mask). F.dropout(w, p, training=self.training) is the function that\n"
        "takes the flag.",
    "partially initialized module":
        "A module was left half-imported. Either the stop button was pressed while Python imported it (the setup\n"
        "cell's first run, say), and Python does not finish such an import later: restart the kernel (Kernel ▸\n"
        "Restart Kernel) and run the cells from the top. Or an import goes round in a circle: a file of yours that\n"
        "imports itself, or is named like a library (torch.py, einops.py) beside the notebook.",
    "is not used in transform":
        "Each size given by keyword (h=n_heads) belongs to an axis of the pattern with the same name, case\n"
        "included: a keyword whose name the pattern does not have (heads= for h, h= for H) is refused.",
    "must be a string, representing the einsum pattern":
        "einops' einsum takes the tensors first, then the pattern, with the axis names separated by spaces:\n"
        "einsum(a, b, '... i d, ... j d -> ... i j'). torch.einsum is the one that takes the pattern first,\n"
        "torch.einsum('...id,...jd->...ij', a, b).",
    "Could not infer sizes for":
        "A group that is split, (h d), needs every size in it but one: give it by keyword, as in\n"
        "rearrange(x, 'b t (h d) -> b h t d', h=n_heads); einops works out the other from the axis's length.",
    "Identifiers only on one side of expression":
        "rearrange keeps every axis: each name on one side of -> appears on the other too, spelled the same\n"
        "(inside a group or not). A name on one side only is a typo, a leftover, or an axis left out of the other\n"
        "side: (n d) on the left and h on the right, say. To sum or drop an axis, use reduce; to add one, repeat.",
    "Unknown character ','":
        "In an einops pattern the names are separated by spaces, also inside a group: (h d), not (h, d). Commas\n"
        "separate the inputs of einsum's pattern only ('... i d, ... j d -> ... i j').",
    **dict.fromkeys(("Unknown character '*'", "Unknown character 'x'", "Unknown character '+'"),
        "An einops pattern merges axes by grouping their names in parentheses, apart by spaces: 'b h t d ->\n"
        "b t (h d)' makes one axis of h·d features. No sign goes between the names."),
    **dict.fromkeys(("rearrange() takes 2 positional arguments", "repeat() takes 2 positional arguments",
                     "reduce() takes 3 positional arguments"),
        "einops takes the tensor and the pattern (and reduce the reduction) by position, and every size by\n"
        "keyword, named as its axis in the pattern: rearrange(x, 'b t (h d) -> b h t d', h=n_heads)."),
    **dict.fromkeys(("1D tensors expected, but got", "outer: Expected 1-D argument"),
        "torch.dot (t.dot) multiplies two single vectors (1-D) into one number, and torch.outer makes the\n"
        "table of two vectors; neither takes more axes. For every query against every key, batch and heads\n"
        "included, use a matrix product, q @ k.mT (or einsum with ...); for one dot product per position along\n"
        "the last axis, (a * b).sum(-1)."),
    "self must be a matrix":
        "torch.mm multiplies two 2-D matrices only. @ (torch.matmul) takes inputs with any number of leading\n"
        "axes and broadcasts them: a @ b.mT where torch.mm(a, b.T) was meant.",
    "tensor.mT is only supported on matrices":
        ".mT swaps the last two axes, so it needs at least two, and this tensor has one: a single vector needs no\n"
        "transpose (v @ M works as it is). Where an axis was indexed away (x[b] in a loop over the batch), @ on\n"
        "the whole tensors handles any number of leading axes.",
    "can't divide axis":
        "einops could not cut an axis into the sizes asked. Check which axis the parentheses group (split_heads\n"
        "cuts the features, the last axis: 'b t (h d) -> b h t d'), and that each size comes from the arguments,\n"
        "h=n_heads, not a number written in (the checks use other head counts too).",
    "maximum recursion depth exceeded":
        "The function called itself again and again with no case that stops it (a forward that calls\n"
        "self(x) or self.forward(x) is one way): compute the result here instead of calling it anew.",
    "Can't call numpy() on Tensor that requires grad":
        "numpy cannot carry gradients, and .detach() would cut the answer from autograd, which the checks\n"
        "(and training) go back through: compute with torch operations on the tensors themselves.",
    **dict.fromkeys(("only one element tensors can be converted to Python scalars", "cannot be converted to Scalar"),
        "math's functions (math.sqrt, math.exp...), float(), int() and .item() take one number, and this\n"
        "tensor holds several: use torch's own functions on tensors (torch.sqrt(t), t.exp()), and keep\n"
        ".item() for a tensor of one element."),
    **dict.fromkeys(("must be Tensor, not float", "must be Tensor, not int"),
        "A torch function got a Python number where it takes a tensor. For a number, math's functions\n"
        "(math.cos, math.sqrt) give a number back."),
    "must be real number, not torch.Size":
        "x.shape is the tuple of every size: take the one you mean, q.shape[-1] (the last axis), for math.sqrt and\n"
        "the like.",
    **dict.fromkeys((f"{f}() takes 1 positional argument but 2 were given" for f in ("ones", "zeros", "empty", "rand",
                                                                                      "randn", "eye")),
        "The device (or dtype) goes by name, after the size: torch.ones((T, T), device=device)."),
    "must be tuple of ints,but got float":
        "Sizes are ints, and / always gives a float, even where it divides exactly (12 / 3 is 4.0):\n"
        "divide sizes with // (d_model // n_heads).",
    "is invalid for input of size":
        "view and reshape keep every element: the new sizes must multiply to the number of elements the\n"
        "tensor holds (its size above). A common cause: a size taken from another tensor, or one size\n"
        "where a product was meant; one size may be -1, for torch to work out.",
    "Dimension out of range":
        "The tensor has fewer axes than that axis number needs. A common cause: an axis counted from the\n"
        "front (dim=2) where inputs come with other numbers of leading axes: count from the end\n"
        "(dim=-1 is the last axis), which holds for any number of them.",
    **dict.fromkeys(("too many values to unpack", "not enough values to unpack"),
        "Unpacking (a, b = ...) needs exactly one name per value: x.shape gives one size per axis\n"
        "(x.shape[-1] takes the last alone), a tensor unpacks along its first axis, and a function that\n"
        "returns one tensor gives no pair."),
    "required positional argument":
        "A common cause: a def line that asks for other arguments than the docstring's, which are what the\n"
        "checks pass.",
    "does not support the context manager protocol":
        "A with statement needs an object, not a class or a function: torch.no_grad is a class, so write\n"
        "`with torch.no_grad():`, with the parentheses.",
    **dict.fromkeys(("'float' object has no attribute 'item'", "'int' object has no attribute 'item'"),
        "A Python number has no .item(): only a tensor has. Common causes: one branch gives a tensor and the\n"
        "other a number (tp / (tp + fp) if tp + fp > 0 else 0.0), where float(x) turns either into a float;\n"
        "or the value is already a number (a setting such as group['lr'], or int(...)): drop the .item()."),
    **dict.fromkeys(("'BertEncoder' object has no attribute 'layer'", "'BertEncoder' object has no attribute 'd_model'",
                     "'BertEncoder' object has no attribute 'n_layers'", "'SentenceClassifier' object has no attribute "
                     "'layers'", "'SentenceClassifier' object has no attribute 'embeddings'"),
        "The course's BertEncoder keeps its blocks as .layers, an nn.ModuleList (Hugging Face's BertModel\n"
        "names them encoder.layer), its embeddings as .embeddings, and its sizes in .config\n"
        "(encoder.config.d_model, .n_layers). A SentenceClassifier holds it as model.encoder:\n"
        "model.encoder.layers, model.encoder.embeddings."),
    "'torch.Size' object is not callable":
        "x.shape is a tuple, read with brackets: x.shape[-1]; x.size(-1) is the method that gives the same.",
    **dict.fromkeys(("builtin_function_or_method", "'method' object"),
        "A method was used without its parentheses, so the method itself came instead of what it returns:\n"
        "x.size(), p.numel(), model.parameters()."),
    "'bool' object is not callable":
        "A common cause: p.requires_grad(False). requires_grad is an attribute (p.requires_grad = False);\n"
        "the method, with an underscore, is p.requires_grad_(False).",
    **dict.fromkeys(("'float' object is not callable", "'int' object is not callable"),
        "A number was called like a function. A common cause: an attribute that keeps a number where a\n"
        "module was meant: self.dropout = dropout keeps the probability, self.dropout = nn.Dropout(dropout)\n"
        "makes the module to call."),
    **dict.fromkeys(("'Parameter' object is not callable", "'Tensor' object is not callable"),
        "A tensor was called like a function: multiply by it (x * self.weight), or x @ W for a matrix\n"
        "product."),
    **dict.fromkeys(("'int' and 'tuple'", "'tuple' and 'int'", "'float' and 'tuple'", "'tuple' and 'float'",
                     'can only concatenate tuple (not "float")', 'can only concatenate tuple (not "int")'),
        "A tuple came where a number was expected. A common cause: a comma left at the end of an assignment\n"
        "(d_k = q.shape[-1], makes a tuple of one); or a pair not unpacked (x.shape[-2:], a function's\n"
        "several results): take the one you mean."),
    **dict.fromkeys(("'tuple' object has no attribute", "must be Tensor, not tuple", "'tuple' and 'Tensor'",
                     "'Tensor' and 'tuple'"),
        "A tuple came where a tensor was expected. Common causes: a function that returns several values\n"
        "(scaled_dot_product_attention's (out, weights), topk's (values, indices), a batch (x, y)):\n"
        "unpack it first, out, weights = f(...); or a comma left at the end of an assignment\n"
        "(s = q @ k.mT, makes a tuple of one)."),
    **dict.fromkeys(("'NoneType'", "not NoneType"),     # Python's and torch's words, not a check's "found NoneType"
        "A value here is None. Common causes: a parameter whose .grad is None (skip it), an optional\n"
        "argument left at None (test `if mask is not None:` first; a layer built without bias has\n"
        "bias None), a dict's .get() that found nothing, or a function of yours with no return."),
    "masked_fill() received an invalid combination of arguments - got (bool":
        "masked_fill needs a bool tensor as its mask, and a Python True or False came (mask == 0 where\n"
        "mask is None gives False): test `if mask is not None:` first.",
    **dict.fromkeys(("Expected target size", "to match target batch_size"),
        "F.cross_entropy reads (N, V) logits with (N,) targets (or (N, V, T) with (N, T)): flatten\n"
        "batch and time first, logits.reshape(-1, V) and targets.reshape(-1)."),
    **dict.fromkeys(("'Tensor' object has no attribute 'last_hidden_state'", "'Tensor' object has no attribute "
                     "'pooler_output'", "'Tensor' object has no attribute 'hidden_states'"),
        "The course's BertEncoder returns the hidden states themselves, a (B, T, d_model) tensor, not\n"
        "Hugging Face's output object: use what it returns as it is (no .last_hidden_state, no [0])."),
    "grad can be implicitly created only for scalar outputs":
        "backward() with no argument needs one number to differentiate, and this tensor holds several (a\n"
        "loss per position or per row, say). A loss is their mean: .mean(), or F.cross_entropy's default\n"
        "reduction='mean'.",
    "multi-target not supported":
        "F.cross_entropy's targets here are class ids, one per position: 1-D, (N,) int64, with no axis\n"
        "after it (targets.reshape(-1), not reshape(-1, 1)), and not one-hot rows (N, V).",
    "indexing tensors could not be broadcast together":
        "Index tensors given together pick one element per position of their common (broadcast) shape, so\n"
        "they must broadcast against each other: torch.arange(B)[:, None], torch.arange(T)[None, :] and\n"
        "targets (B, T) do, arange(B) and arange(T) side by side do not. Flattened, logits (B·T, V) take\n"
        "arange(B·T) with targets.reshape(-1); or pick along the last axis with gather(-1, targets[..., None]).",
    **dict.fromkeys(("expected target dtype to be Long", "Expected floating point type for target with class probabilities"),
        "F.cross_entropy's targets are class ids, int64, as they come: not .float() and not one-hot\n"
        "(float targets are read as a probability for every class)."),
    "cannot be broadcast to indexing result":
        "t[mask] = v fills only the positions mask selects: give one value (t[mask] = mask_id), or\n"
        "values selected the same way (t[mask] = v[mask]).",
    "Tensors must have same number of dimensions":
        "torch.cat joins tensors along an axis they all have, so each needs the same number of axes: add\n"
        "the missing one (t[:, None], t.unsqueeze(-1)); to make one vector of tensors of other shapes,\n"
        "flatten each first (t.reshape(-1)).",
    "The expanded size of the tensor":
        "An assignment into a tensor, out[...] = v, needs v to fit the place it goes (Target sizes) or to\n"
        "broadcast to it. A common cause: an output made beforehand (torch.zeros, torch.empty) in a shape\n"
        "taken from one input where the inputs broadcast to a larger one: give it the result's shape, or build\n"
        "the result with tensor operations instead of filling a buffer.",
    "view size is not compatible with input tensor's size and stride":
        "view only relabels the memory a tensor already has, in its order; after a transpose, permute or\n"
        "slice the elements are not laid out that way. reshape does the same where it can and copies where it\n"
        f"must: {_VIEW_FIX}",
    "Sizes of tensors must match except in dimension":
        "torch.cat joins tensors along one axis (dim=): on every other axis their sizes must be equal. A\n"
        "common cause: a tensor that lost its batch axis on the way, logits[-1] (the last sequence's logits\n"
        "at every position) where logits[:, -1] (every sequence's last position) was meant; or the wrong dim=.",
    "stack expects each tensor to be equal size":
        "torch.stack needs tensors of one shape. Pieces of other sizes often come from x.chunk(n, dim) or\n"
        "x.split along an axis that n does not divide: check that dim is the axis you mean to cut. To put\n"
        "tensors of other shapes together, flatten each and join them, torch.cat([t.reshape(-1) for t in ts]),\n"
        "or reduce each to one number first.",
    **dict.fromkeys(("must be tuple of Tensors, not", "cat() takes from 1 to 2 positional arguments",
                     "stack() takes from 1 to 2 positional arguments"),
        "torch.cat and torch.stack take one list or tuple of tensors, in brackets: torch.cat([a, b], dim=1),\n"
        "torch.stack([... for s in starts]) (not a bare generator expression); t.unbind(dim) turns one tensor\n"
        "into such a list, to give as it is (no * before it)."),
    "only integer tensors of a single element can be converted to an index":
        "A tensor of several values was used where Python needs one int (a slice's start, range()).\n"
        "Take one at a time (for s in starts.tolist()), or index every position at once:\n"
        "data[starts[:, None] + torch.arange(T)].",
    "Index tensor must have the same number of dimensions as input tensor":
        "gather takes an index with as many axes as its input: add the last one,\n"
        "t.gather(-1, idx[..., None]), and take it away after ([..., 0]).",
    **dict.fromkeys(("'generator' object", "of type 'generator'"),
        "A generator (model.parameters() is one) has no len() and no [i], and can be walked once:\n"
        "make a list of it first, params = list(params)."),
    **dict.fromkeys(("randint() received an invalid combination of arguments", "randint(): argument 'size'"),
        "torch.randint takes the size as a tuple, even for one axis: torch.randint(high, (n,)),\n"
        "or torch.randint(low, high, (n,)); generator= goes by name."),
    "expects 'from' to be less than 'to'":
        "torch.randint(high, size) draws from [0, high), torch.randint(low, high, size) from [low, high):\n"
        "a bound given alone is the upper one, and it must be above low (above 0). A token id drawn from\n"
        "the whole vocabulary is torch.randint(vocab_size, shape, generator=generator).",
    "object has no attribute 'backward'":
        ".item() and float() turn a tensor into a Python number, which has no gradient and no backward:\n"
        "call .backward() on the loss tensor itself, and take .item() after it, for the number you return.",
    **dict.fromkeys(("'float' object is not iterable", "'int' object is not iterable"),
        "A number came where Python walks through several things (a list of tensors, model.parameters()).\n"
        "A common cause: two arguments in another order than the function takes them, in the call on\n"
        "that line (clip_grad_norm(params, max_norm): the parameters first)."),
    "not implemented for 'Long'":
        "An operation on floating-point numbers got an int64 ('Long') tensor. A common cause: two\n"
        "arguments swapped, as in F.cross_entropy(targets, logits), which takes the scores first and the\n"
        "class ids second; or a tensor made from whole numbers (torch.tensor([1, 2])) where floats were meant.",
    "the number of sizes provided (0) must be greater or equal to the number of dimensions":
        "A tensor of several values was written where one number goes (out[i] = row, with out 1-D). A\n"
        "common cause: a loop over x's first axis, which takes rows of a batch but single numbers of a\n"
        "1-D x. Work on the last axis instead (dim=-1, keepdim=True), which holds for any number of\n"
        "leading axes, with no loop.",
    "prob_dist must be 1 or 2 dim":
        "torch.multinomial draws from rows of probabilities, (B, V) at most: take the last position's\n"
        "logits first, logits[:, -1, :].",
    '"bitwise_':
        "&, | and ~ combine bool tensors (and integers), not floats: compare first to get a bool tensor\n"
        "(torch.rand(...) < p).",
    "Only Tensors of floating point and complex dtype can require gradients":
        "A tensor of integers cannot hold gradients: a parameter must be floating point. torch.tensor(d) of\n"
        "an int d is one int64 number, not d values: torch.ones(d) or torch.zeros(d) make d floats.",
    "'list' object has no attribute 'detach'":
        "nn.Parameter wraps a tensor, not a list: nn.Parameter(torch.ones(d)).",
    "forward() takes 1 positional argument but 2 were given":
        "A method's first parameter is the object itself: def forward(self, x), and self.weight inside.",
    "torch.return_types":
        "max, min, median, mode, sort and topk along an axis give a pair, (values, indices): take\n"
        ".values (x.median(-1, keepdim=True).values), or unpack it.",
}


# A TypeError at the call itself (no line of the answer in its traceback): the answer's signature renamed a
# parameter the checks pass by name, or made it positional-only.
POSITIONAL_ONLY = ("The checks pass the arguments by name (x=..., n_heads=...): a / in the def line makes those\n"
                   "before it positional-only. Leave the / out, as the stub does.")
RENAMED_PARAMETER = ("The checks call the answer with the parameter names of its signature, by name (weight=...,\n"
                     "labels=...): keep the names the answer cell gave, even where another name reads better.")


def explain(exc: BaseException) -> str:
    """The note for the first key found in the error's text, or ""."""
    text = str(exc)
    if isinstance(exc, NameError) and getattr(exc, "name", None):
        try:
            earlier = get_exercise(exc.name)
        except KeyError:
            earlier = None
        if earlier is not None:            # LayerNorm's answer reading layer_norm, whose answer cell has not run
            kind = "class" if inspect.isclass(earlier.reference) else "def"
            return (f"{exc.name} is an exercise of {earlier.notebook}, and its answer cell (the one with `{kind} "
                    f"{exc.name}`)\nhas not run in this kernel, or stopped with an error before {exc.name} existed. Run "
                    f"that cell (its\ncheck shows whether it is right), then this one: grading runs the answer cells in "
                    f"order.")
        kept = _init_argument(exc)
        if kept:
            return kept
        if exc.name in ("inf", "nan"):
            return (f"{exc.name} is no name of Python's: write float('-inf') (or math.inf, torch.inf), or float('nan')."
                    if exc.name == "inf" else "nan is no name of Python's: write float('nan') (or math.nan, torch.nan).")
        imports = {"np": "import numpy as np", "math": "import math", "F": "import torch.nn.functional as F",
                   "nn": "from torch import nn", "plt": "import matplotlib.pyplot as plt",
                   **{f: f"from einops import {f}" for f in ("rearrange", "einsum", "repeat", "reduce")}}
        if exc.name in imports:
            kind = "an einops function" if imports[exc.name].startswith("from einops") else "a module"
            return (f"{exc.name} is {kind}, which Python knows only once imported: if the setup cell imports it, "
                    f"run that cell;\nif not, write `{imports[exc.name]}` at the top of this answer cell (grading "
                    f"runs the released\nsetup cell and the answer cells, and no other cell).")
        return (f"{exc.name} has no value where the answer reads it: a typo, a variable of another function, or a\n"
                f"name a cell defines that has not run yet (grading runs the setup cell, as released, and the\n"
                f"answer cells in order, and no other cell): define it in this answer cell, above where it is used.")
    why = (_name_replaced(exc) or _module_built_with_inputs(exc) or _argument_not_kept(exc)
           or next((why for key, why in TORCH_ERRORS.items() if key in text), ""))
    called = re.match(r"([\w.<>]+)\(\) missing", text)
    if "required positional argument" in text and called and _learner_line(exc)[0] is not None \
            and not _raised_in_learner_def(exc):
        # a call on the answer's own line left out an argument (torch.multinomial(probs), BertEncoder()): the
        # answer's def line is not what is wrong
        why = (f"The call of {called.group(1)} on that line leaves out an argument it needs (its name is above):\n"
               f"give it there, as its documentation or docstring shows.")
    elif "required positional argument" in text and "forward()" in text:      # a module's forward, not a function
        why += (" A module keeps its weights as attributes (self.weight), so its forward takes the\n"
                "input alone: forward(self, x).")
    line = _learner_line(exc)[1]
    if '"bitwise_' in text and (found := re.search(r"[\w.\]]+\s*[&|]\s*[\w.\[\]]+\s*(?:[<>]=?|==|!=)\s*[\w.]+", line)):
        why = (f"& and | bind tighter than <, > and ==: `{found.group(0)}` compares the result of the & (or |),\n"
               f"not the tensor beside it. Put each comparison in parentheses: chosen & (r < 0.8).")
    # `preds == positive & labels == positive`: & binds first, and Python chains the two == into an `and`
    if "Boolean value of Tensor" in text and not re.search(r"\b(and|or|not|if|while)\b", line) and (found := re.search(
            rf"({_OPERAND}\s*(?:[<>]=?|==|!=)\s*{_OPERAND})\s*([&|])\s*({_OPERAND}\s*(?:[<>]=?|==|!=)\s*{_OPERAND})",
            line)):
        left, sign, right = found.groups()
        why = (f"& and | bind tighter than ==, < and >: `{found.group(0)}`\ncompares with the result of the {sign} "
               f"in the middle, and Python joins the two comparisons with an\n`and`, which asks a tensor for one True or "
               f"False. Put each comparison in parentheses:\n({left}) {sign} ({right}).")
    if "view size is not compatible" in text and ".view(" in line:       # the answer's own line, rewritten
        why = why.replace(_VIEW_FIX, line.strip().replace(".view(", ".reshape("))
    if "must match the size of tensor b" in text:
        why = _broadcast_cause(exc, line) or why
    if "The expanded size of the tensor" in text and re.search(r"\.expand(_as)?\(", line) \
            and not re.search(r"\]\s*=[^=]", line):
        why = ("expand only stretches axes of size 1 (and adds leading ones); an axis of another size must already\n"
               "be the size asked for. To add axes where they belong, index with None (t[:, None, None, :]) or\n"
               "unsqueeze; operations broadcast size-1 axes themselves (a matrix product its leading axes too), so\n"
               "there is usually nothing to expand.")
    if "Boolean value of Tensor" in text and re.search(r"\btorch\.einsum\(\s*(?![\s'\"])", line):
        why = ("torch.einsum takes the pattern first, then the tensors, its letters run together:\n"
               "torch.einsum('...id,...jd->...ij', q, k). einops' einsum (from einops import einsum) is the one\n"
               "that takes the tensors first and the pattern last, with its names apart: '... i d, ... j d -> ... i j'.")
    if "for ^: 'set'" in text or "'set' and" in text and "for ^" in text:
        why = "^ between sets is their symmetric difference, and it takes two sets: set(a) ^ set(b)."
    elif "Boolean value of Tensor" in text and (chained := re.search(
            rf"({_OPERAND})\s*(<=?|>=?)\s*({_OPERAND})\s*(<=?|>=?)\s*({_OPERAND})", line)):
        a, op1, x, op2, b = chained.groups()            # 0.8 <= r < 0.9: Python's and, which a tensor refuses
        why = (f"`{chained.group(0)}` is Python's chained comparison, ({a} {op1} {x}) and ({x} {op2} {b}), and\n"
               f"`and` asks a tensor for one True or False. Combine the two with &, each in parentheses:\n"
               f"({x} {'>=' if op1 == '<=' else '>' if op1 == '<' else op1.replace('>', '<')} {a}) & ({x} {op2} {b}).")
    if ('"bitwise_xor' in text or re.search(r"for \^: '(int|float)' and '(int|float)'", text)) and re.search(
            r"[\w)\]]\s*\^\s*[-\w(.]", line):
        why = ("^ is Python's exclusive or, not a power: a power is **, as in g ** 2 for the formulas' g² (or g * g),\n"
               "or d ** 0.5 for √d (or math.sqrt(d)).")
    if re.search(r"[\"'](rand|randn|uniform|normal|bernoulli)\w*[\"'] not implemented for '(Long|Int|Bool)'"
                 r"|check_uniform_bounds", text) and (like := re.search(r"torch\.(rand|randn)_like\(\s*(\w+)", line)):
        why = (f"torch.{like[1]}_like({like[2]}) makes a tensor of the dtype of {like[2]}, whole numbers here, which "
               f"have no such draws:\ntorch.{like[1]}({like[2]}.shape, generator=generator) draws floats of that "
               f"shape.")
    if (axis := re.search(r"Dimension out of range \(expected to be in range of \[-(\d+), \d+\], but got (-\d+)\)",
                          text)):          # counted from the end already: the tensor has fewer axes than that
        have, asked = int(axis[1]), int(axis[2])
        why = (f"The tensor has {have} ax{'is' if have == 1 else 'es'} here, and dim={asked} counts {-asked} from "
               f"the end: it is not there. The checks pass tensors\nwith fewer leading axes too (a single vector "
               f"(D,) has only the last): work on the last axis alone,\ndim=-1, or flatten what comes before it "
               f"with reshape(-1, D), which works for any number of them.")
    if "'generator' object has no attribute 'zero_grad'" in text:
        why = ("model.parameters() is a generator of tensors, with no zero_grad(): call optimizer.zero_grad() (or\n"
               "model.zero_grad()), which clears every gradient the step is about to use.")
    if re.fullmatch(r"'(SGD|Adam|AdamW|\w*Optimizer\w*)' object is not callable", text):
        why = ("An optimizer is not called on the loss: loss.backward() fills the gradients, then optimizer.step()\n"
               "updates the weights with them.")
    if re.search(r"'\w+' object is not callable", text) and (called := re.search(r"(\w+)\.(mT|T|mH|H)\s*\(\s*\)", line)):
        why = (f".{called[2]} is an attribute, not a method: write {called[1]}.{called[2]}, without the parentheses"
               + (f" ({called[1]}.transpose(-2, -1)\nis the method that swaps the last two axes)." if called[2] == "mT"
                  else "."))
    if "Boolean value of Tensor" in text and re.search(r"(?<![\w.])einsum\(", line) \
            and getattr(_learner_line(exc)[0].f_globals.get("einsum"), "__module__", "").startswith("torch"):
        why = ("einsum here is torch's (a cell ran `from torch import einsum`), which takes the pattern first and the\n"
               "letters run together: torch.einsum('...id,...jd->...ij', q, k). einops' einsum takes the pattern last:\n"
               "`from einops import einsum` (00's setup cell imports it) gives it back.")
    if re.search(r"(view|reshape|expand|repeat)\(\) received an invalid combination of arguments - got \((torch\.Size|"
                 r"tuple), ", text):
        why = ("The sizes go in as separate numbers, or as one tuple, not a shape beside numbers: unpack the shape\n"
               "into them, .view(*t.shape, 1, 1, T) (or t.shape[0] for a single size).")
    elif re.search(r"received an invalid combination of arguments - got \([^)]*(?<!=)torch\._C\.Generator", text):
        why = "A torch.Generator is given by name, after the sizes: torch.rand(shape, generator=g)."
    if re.search(r"Shape mismatch, \d+ != \d+", text):
        why = ("A size given by keyword (h=...) disagrees with the tensor's own: take it from the tensor (x.shape), or\n"
               "leave it out where the pattern can work it out (merging needs none: 'b h t d -> b t (h d)').")
    kwarg = re.match(r"([\w.<>]+)\(\) got an unexpected keyword argument 'device'", text)
    if kwarg and not why and _torchs(kwarg.group(1)):             # torch's function, not the learner's own
        why = ("device= goes to the call that makes a tensor (torch.ones(..., device=device), torch.arange(...,\n"
               "device=...)); a function that works on a tensor (tril, where, cat, masked_fill) keeps that tensor's "
               "device.")
    module = re.fullmatch(r"'(\w+)' object has no attribute '(modules|parameters|named_parameters|children|train|eval|"
                          r"to|state_dict|zero_grad|register_buffer|_modules|_parameters)'", text)
    if module and not why and _own_class(getattr(exc, "obj", None)):      # a class of the answer's, not an nn.Module
        why = (f"{module.group(1)} is not an nn.Module (which would give it .{module.group(2)}): write its class line "
               f"as\nclass {module.group(1)}(nn.Module):, and begin its __init__ with super().__init__().")
    if "too many indices for tensor of dimension" in text and not why:
        frame = _learner_line(exc)[0]
        code = _code_of(frame)
        indexed = set(re.findall(r"\b(\w+)\s*\[", line))
        squeezed = set(re.findall(r"^\s*(\w+)\s*=.*(?:\.squeeze\(\s*\)|\bsqueeze\(\s*[^,()]+\))", code, re.M)
                       + re.findall(r"\b(\w+)\.squeeze_\(\s*\)", code))
        unpacked = frame is not None and any(    # `logits, _ = model(x)`; not a shape's or torch.topk's pair
            not re.search(r"\.shape\b|\.size\(|\b(topk|max|min|sort|kthvalue|median|mode|var_mean|std_mean|split|"
                          r"chunk|unbind|cummax|cummin|aminmax|unique)\(", rhs)
            for rhs in re.findall(r"\w\s*,\s*_\s*=(.*)", code))
        why = "The index names more axes than the tensor has (print its .shape)." + (_UNPACKED if unpacked else "")
        if indexed & squeezed:          # 08's sample at B = 1: the new token lost its batch axis, then indexed
            why += ("\nA .squeeze() with no axis drops every axis of size 1: the batch axis when B = 1, the time axis "
                    "when T = 1.\nSqueeze only the axis you mean, .squeeze(-1), or keep the shape as it is.")
    given = re.search(r"\b(clip_grad_norm_?|clip_grad_value_)\(\s*(\w+)\s*[,)]", line)
    if re.fullmatch(r"'\w+' object is not iterable", text) and given and not why:
        frame = _learner_line(exc)[0]
        value = {**frame.f_globals, **frame.f_locals}.get(given.group(2))
        fn, name = given.groups()
        if isinstance(value, nn.Module):
            why = (f"{fn} takes the parameters to clip, {name}.parameters(), not the module itself:\n"
                   f"{fn}({name}.parameters(), max_norm).")
        elif isinstance(value, torch.optim.Optimizer):
            why = (f"{fn} takes the parameters to clip, the model's: {fn}(model.parameters(), max_norm). The "
                   f"optimizer keeps\nthem too, in {name}.param_groups, but is not itself a sequence of them.")
    if "must be Tensor, not int" in text and re.search(r"\bsum\(", line):
        why = "sum() of no items is the int 0, not a tensor.\n" + _EXHAUSTED
    given = re.search(r"\btorch\.(?:tensor|as_tensor|LongTensor|FloatTensor)\(\s*(\w+)\s*[,)]", line)
    frame = _learner_line(exc)[0]
    held = ({**frame.f_globals, **frame.f_locals}.get(given.group(1)) if given and frame is not None else None)
    if re.search(r"only (integer tensors of a single element|one element tensors) can be converted", text) and (
            re.search(r"\btorch\.(tensor|as_tensor|LongTensor|FloatTensor)\(\s*\[(.*\bfor\b|\s*\w+(\s*,\s*\w+)+"
                      r"\s*\])", line)     # a comprehension or a list of names: not a slice at a tensor inside
            or isinstance(held, (list, tuple)) and any(isinstance(t, torch.Tensor) for t in held)):   # torch.tensor(heads)
        why = ("torch.tensor makes a tensor of numbers (or of lists of numbers), not of a list of tensors: join\n"
               "tensors with torch.stack([...]) (on a new axis) or torch.cat([...]) (along an axis they have).")
    walked = re.match(r"\s*for\s+.+?\s+in\s+(.+?)\s*:", line)
    # `for _ in max_new_tokens:`, `for i in len(x):`; a float there is more often an argument out of order
    if text == "'int' object is not iterable" and walked and not re.search(r"\b(zip|enumerate)\(", walked.group(1)):
        why = (f"A for loop walks through several things, and {walked.group(1)} is one number: to repeat something "
               f"that many\ntimes, walk range({walked.group(1)}); to walk a list or a tensor, loop over it itself.")
    if text == "tuple index out of range" and not why:
        why = _missing_axis(exc, line)
    dropout = re.search(r"'[<>]=?' not supported between instances of '(?:\w*Dropout' and '(?:float|int)|"
                        r"(?:float|int)' and '\w*Dropout)'", text)
    # F.dropout(w, self.dropout), `if self.dropout > 0` or nn.Dropout(self.dropout)(x), with self.dropout an nn.Dropout:
    # said over the note of a module built with the inputs, whose cause this is not
    if dropout and (not why or why == _module_built_with_inputs(exc)) and not _name_replaced(exc):
        why = ("F.dropout takes the rate, a number, where it got an nn.Dropout module. " if re.search(
                   r"\b(F|functional)\.dropout\(", line) else "That is the nn.Dropout module, not its rate. ")
        why += ("Call the module on the tensor,\nself.dropout(x): it knows its rate (self.dropout.p) and whether the "
                "model is training.")
    if "positional argument" in text and re.search(r"super\(\)\.__init__\(\s*[^)\s]", line):
        why = ("nn.Module's own __init__ takes no arguments: super().__init__(), with nothing between the brackets.\n"
               "The module's sizes and settings are yours to keep, as its parameters and attributes (self.eps = eps).")
    if isinstance(exc, NotImplementedError) and not text and (owner := _optimizer_without_step(exc)):
        why = (f"{owner} has no step method of its own, so torch.optim.Optimizer's ran, which only raises this: "
               f"check\nthat `def step(self, closure=None):` is spelled so and indented inside the class, beside "
               f"__init__.")
    if (not why and isinstance(exc, AttributeError) and isinstance(getattr(exc, "obj", None), torch.Tensor)
            and (near := difflib.get_close_matches(getattr(exc, "name", None) or "", _TENSOR_ATTRIBUTES, n=1,
                                                   cutoff=0.75))):
        why = f"A tensor has no .{exc.name}: the one meant is likely .{near[0]}."      # p.grads, x.dtyp, x.shapes
    return why


def _optimizer_without_step(exc: BaseException) -> str:
    """The name of the optimizer class whose step() is torch.optim.Optimizer's own, raising where exc was, or ""."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    own = inspect.unwrap(torch.optim.Optimizer.step).__code__          # torch wraps step() in a profiling hook
    me = tb.tb_frame.f_locals.get("self") if tb is not None and tb.tb_frame.f_code is own else None
    return type(me).__name__ if isinstance(me, torch.optim.Optimizer) else ""


_TENSOR_ATTRIBUTES = ["grad", "shape", "dtype", "device", "data", "requires_grad", "ndim", "size", "numel", "item",
                      "detach", "clone", "is_leaf", "mT", "T", "view", "reshape", "transpose", "unsqueeze", "squeeze"]


def _missing_axis(exc: BaseException, line: str) -> str:
    """For "tuple index out of range" on a line that reads t.shape[i] or t.size(i): which tensor has fewer axes than
    asked for, and the usual causes, or ""."""
    frame = _learner_line(exc)[0]
    if frame is None:
        return ""
    names = {**frame.f_globals, **frame.f_locals}
    for m in re.finditer(r"(?<![\w.])(\w+)(?:\.shape\[\s*(-?\d+)\s*\]|\.size\(\s*(?:dim\s*=\s*)?(-?\d+)\s*\))", line):
        name, index = m.group(1), int(m.group(2) or m.group(3))
        t = names.get(name)
        if isinstance(t, torch.Tensor) and not -t.dim() <= index < t.dim():
            if t.dim() == 0:
                return (f"{name} has no axes here (a 0-d tensor), so {m.group(0)} is not there. A common cause: an "
                        f"axis lost on the way, to\nan index such as [0], or to a .squeeze() with no axis, which drops "
                        f"every axis of size 1 (the batch axis\nwhen B = 1): squeeze only the axis you mean, "
                        f".squeeze(-1), or keep the shape.")
            shape = f"{t.dim()} {'axis' if t.dim() == 1 else 'axes'} here, {tuple(t.shape)}"
            # x.shape[4] for the fourth of four (counted from 1), or q.shape[3] written for (B, H, T, D) inputs
            one = (f" axes counted from 1 (they count from 0: the last of {t.dim()} is {name}.shape[{t.dim() - 1}]);\n"
                   if index == t.dim() and t.dim() > 1 else " ")
            return (f"{name} has {shape}, so {m.group(0)} is not there. Common causes: an axis counted\n"
                    f"from the front where inputs come with other numbers of axes (count from the end: {name}.shape[-1] "
                    f"is the\nlast);{one}an axis lost on the way (an index such as [0], or a .squeeze() with no axis, "
                    f"which drops every\naxis of size 1); sizes taken one by one where the whole shape was meant "
                    f"(torch.rand({name}.shape), or\n{name}.numel() for the number of elements).")
    return ""


def _code_of(frame) -> str:
    """The source of the function running in ``frame`` (the cell's, at its top level), comments left out: what the
    answer does there, not what another def of the cell or a comment says."""
    if frame is None:
        return ""
    lines = linecache.getlines(frame.f_code.co_filename)
    if frame.f_code.co_name != "<module>":
        try:
            block = inspect.getblock(lines[frame.f_code.co_firstlineno - 1:])
        except Exception:
            block = lines
        lines = block
    return "".join(re.sub(r"#.*$", "", ln) for ln in lines)


def _init_argument(exc: NameError) -> str:
    """A name that is an argument of the class's __init__, read in another of its methods (LoRALinear's forward
    reading alpha): the note for an undefined name said to define it in the cell, which gives a global."""
    frame = _learner_line(exc)[0]
    while frame is not None and frame.f_code.co_name.startswith("<") and frame.f_back is not None:
        frame = frame.f_back           # a list comprehension or lambda inside the method: the method's frame
    owner = frame.f_locals.get("self") if frame is not None else None
    init = getattr(type(owner), "__init__", None)
    if owner is None or frame.f_code.co_name == "__init__" or not hasattr(init, "__code__"):
        return ""
    if exc.name not in inspect.signature(init).parameters:
        return ""
    method, name = frame.f_code.co_name, exc.name
    kept = getattr(owner, name, None)
    said = f"{name} is an argument of __init__, and {method} sees only what __init__ kept on self"
    if isinstance(kept, nn.Module):    # SentenceClassifier's dropout: a module kept under the argument's name
        return f"{said}: here\nself.{name}, a {type(kept).__name__} module. Call that module: self.{name}(...)."
    if hasattr(owner, name):
        return f"{said}: here\nself.{name}. Read that."
    return (f"{said}: keep it\nthere (self.{name} = {name}, or what {method} needs from it) and read it from self "
            f"here.")


def _broadcast_cause(exc: BaseException, line: str) -> str:
    """Shapes that do not broadcast for a cause the answer shows, other than a reduction without keepdim (06's
    second learner got the keepdim note for all three): a positional True to var or std, a matrix product, an
    unsqueeze."""
    frame = _learner_line(exc)[0]
    cell = "".join(linecache.getlines(frame.f_code.co_filename)) if frame is not None else ""
    if found := re.search(r"\.(var|std)\(\s*-?\w+\s*,\s*(True|False)\s*[,)]", cell):
        return (f"`{found.group(0).rstrip(',)')})`: the second positional argument of {found.group(1)} is unbiased "
                f"(n - 1 in the\ndenominator or not), not keepdim, so the result lost its axis. Give keepdim=True by "
                f"name\n(and unbiased=False where the mean of the squares over n is wanted).")
    if re.search(r"@\s*(self\.)?weight\b", line):
        return ("@ is a matrix product: it sums over the last axis of the left operand, so that axis is gone from\n"
                "its result. Where each feature is scaled by its own weight, the product is elementwise: *.")
    if ".unsqueeze(" in line:
        return ("unsqueeze adds an axis of size 1 where it says, and sizes then line up from the last axis: a (D,)\n"
                "vector unsqueezed at -1 is (D, 1), whose D meets the axis before the last. Check where the new axis\n"
                "goes; a (D,) vector already broadcasts against (..., D) as it is.")
    place = re.search(r"for\s+(\w+)\s*,\s*\w+\s+in\s+enumerate\(", cell)
    if place and re.search(rf"state\[\s*{place.group(1)}\s*\]", cell):
        return (f"self.state[{place.group(1)}] keys the state by a parameter's place in its group, and every group "
                f"counts from 0:\none parameter got another's state, of another shape. Key it by the parameter "
                f"itself, self.state[p].")
    if frame is not None and not re.search(r"\.(mean|sum|amax|amin|max|min|var|std|norm|prod|logsumexp)\(|"
                                           r"\b(sum|mean)\(", cell):
        return _BROADCAST                # no reduction in the answer: the keepdim advice would mislead
    return ""


def _torchs(name: str) -> bool:
    """Whether a callable named in an error (tril, Tensor.masked_fill) is one of torch's."""
    import torch
    import torch.nn.functional as F
    return any(hasattr(where, name.rsplit(".", 1)[-1]) for where in (torch, torch.Tensor, F)) and "<" not in name


def _own_class(obj) -> bool:
    """An instance of a class the learner wrote, not built on nn.Module (not a list, a tensor, a library's)."""
    import torch

    from .cells import learner_made
    return obj is not None and not isinstance(obj, torch.nn.Module) and learner_made(type(obj))


def _raised_in_learner_def(exc: BaseException) -> bool:
    """Whether the answer's own code called a function of the answer's own cells with too few arguments (its
    def line is then the one to read): the TypeError names a function defined in a learner's cell."""
    frame = _learner_line(exc)[0]
    name = re.match(r"([\w.<>]+)\(\) missing", str(exc))
    if frame is None or name is None:
        return False
    if "<locals>" in name.group(1):                   # a function the answer defines inside itself
        return True
    from .engine import _is_learner_frame
    obj = frame.f_globals.get(name.group(1).split(".")[0])
    code = getattr(obj, "__code__", None) or getattr(getattr(obj, "__init__", None), "__code__", None)
    return code is not None and _is_learner_frame(code.co_filename)


def _learner_line(exc: BaseException):
    """The innermost frame of the answer's own code in the error's traceback, and its line ("" if unknown)."""
    from .engine import _is_learner_frame
    frame, lineno, tb = None, 0, exc.__traceback__
    while tb is not None:
        if _is_learner_frame(tb.tb_frame.f_code.co_filename):
            frame, lineno = tb.tb_frame, tb.tb_lineno
        tb = tb.tb_next
    return frame, linecache.getline(frame.f_code.co_filename, lineno) if frame is not None else ""


def _module_built_with_inputs(exc: BaseException) -> str:
    """nn.CrossEntropyLoss(logits, targets): the tensors went to the class's __init__, as its settings, and it
    raised there (about a tensor's truth value, say), not a word of what happened. Or self.act = nn.GELU kept unbuilt:
    self.act(h) builds a GELU without a word, and the error comes where that module meets a tensor's operation."""
    tb, inits = exc.__traceback__, []
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "__init__" and "torch" in Path(code.co_filename).parts:
            inits.append(code)
        tb = tb.tb_next
    frame, line = _learner_line(exc)
    me = frame.f_locals.get("self") if frame is not None else None
    for attr in re.findall(r"\bself\.(\w+)\(", line) if me is not None else ():
        kept = getattr(me, attr, None)
        if isinstance(kept, type) and issubclass(kept, nn.Module) and (
                inits or re.search(rf"\b{kept.__name__}\b", str(exc))):   # self.dropout = nn.Dropout: kept unbuilt
            name = f"nn.{kept.__name__}" if getattr(nn, kept.__name__, None) is kept else kept.__name__
            return (f"self.{attr} is the class {kept.__name__} itself, not a module built from it, so calling it "
                    f"built a new\none with the tensor as its settings" + ("" if inits else
                    ", and that module came back where a tensor belongs") + f". In __init__, build it: self.{attr} = "
                    + (f"{name}(...) ({name}(dropout), say)." if kept is nn.Dropout else f"{name}(...)."))
    called = re.search(r"\b(?:nn|torch\.nn)\.([A-Z]\w*)\(\s*[^)\s]", line)
    if not inits or called is None:
        return ""
    cls, fn = called.group(1), _FUNCTIONAL.get(called.group(1))
    return (f"nn.{cls} is a module class: calling it builds a module, and the tensors went to its __init__ as its\n"
            f"settings. Build it, then call it: nn.{cls}()(...)" + (f", or call the function {fn}(...)" if fn else "")
            + ".")


def _one_word_apart(a: str, b: str) -> bool:
    """Whether two names share a word up to its end (epsilon and eps), with any other words on one side only
    (variance_epsilon and eps; not d_head and n_heads, whose other words differ)."""
    wa, wb = a.split("_"), b.split("_")
    for x in wa:
        for y in wb:
            if min(len(x), len(y)) >= 3 and (x.startswith(y) or y.startswith(x)):
                rest_a, rest_b = [w for w in wa if w != x], [w for w in wb if w != y]
                if not (rest_a and rest_b):
                    return True
    return False


def _argument_not_kept(exc: BaseException) -> str:
    """forward reading self.pre_norm, an argument of __init__ it never stored: nn.Module's own words, "object has
    no attribute 'pre_norm'", say nothing of where it should have come from."""
    found = re.fullmatch(r"'(\w+)' object has no attribute '(\w+)'", str(exc)) if isinstance(exc, AttributeError) else None
    frame = _learner_line(exc)[0]
    me = frame.f_locals.get("self") if frame is not None else None
    if found is None or me is None or type(me).__name__ != found.group(1):
        return ""
    try:
        takes = inspect.signature(type(me).__init__).parameters
    except (TypeError, ValueError):
        return ""
    name = found.group(2)
    # settings kept under a near name (num_heads for n_heads): plain values, not the layers (norm for pre_norm)
    kept = [n for n, v in vars(me).items() if not n.startswith("_") and n != "training"
            and isinstance(v, (int, float, str, bool))]
    # a near name with a word in common (num_heads, n_heads), and not read on the failing line itself (self.n_heads
    # beside self.d_head is another setting, not d_head renamed)
    line = _learner_line(exc)[1]
    near = [n for n in difflib.get_close_matches(name, kept, n=3, cutoff=0.3) if (
                set(n.split("_")) & set(name.split("_")) and difflib.SequenceMatcher(None, name, n).ratio() >= 0.5
                or n.replace("_", "") == name.replace("_", "")
                or _one_word_apart(n, name))              # prenorm for pre_norm, epsilon for eps
            and not re.search(rf"\bself\.{n}\b", line)][:1]
    if name not in takes:        # self.num_heads read, self.n_heads kept: one attribute under two names
        return (f"{found.group(1)} keeps self.{near[0]}, not self.{name}: use one name in __init__ and in the "
                f"methods that read it." if near else "")
    also = f" (it keeps self.{near[0]}: use one name for it)" if near else ""
    return (f"__init__ takes {name} but does not keep it{also}: store it there, self.{name} = {name}, for the other\n"
            f"methods to read (an argument of __init__ is gone once __init__ returns).")


_FUNCTIONAL = {"CrossEntropyLoss": "F.cross_entropy", "MSELoss": "F.mse_loss", "NLLLoss": "F.nll_loss",
               "Softmax": "torch.softmax", "LogSoftmax": "F.log_softmax", "Dropout": "F.dropout",
               "BCEWithLogitsLoss": "F.binary_cross_entropy_with_logits", "GELU": "F.gelu", "ReLU": "F.relu"}


def _name_replaced(exc: BaseException) -> str:
    """A module or function of the notebook's (math, torch, F, rearrange) that a later cell gave another value
    (math = None), read as such on the answer's line that raised: say so, rather than what None usually means."""
    frame, line = _learner_line(exc)
    if frame is None:
        return ""
    if isinstance(exc, AttributeError) and getattr(exc, "name", None):
        used = re.findall(rf"\b([A-Za-z_]\w*)\s*\.\s*{re.escape(exc.name)}\b", line)
        found = [n for n in used if n in frame.f_globals and frame.f_globals[n] is getattr(exc, "obj", object())]
    elif isinstance(exc, TypeError) and "object is not callable" in str(exc):
        found = [n for n in re.findall(r"\b([A-Za-z_]\w*)\s*\(", line)
                 if n in frame.f_globals and not callable(frame.f_globals[n])]
    else:
        found = []
    found = [n for n in found if n not in frame.f_code.co_varnames]        # a global of the notebook's
    if not found:                      # any error on a line using a setup name a cell gave another value (math =
        from . import kernel           # torch.ones(3): "Tensor.sqrt() takes no arguments", 05's second learner)
        space = frame.f_globals
        found = [n for n, ours in kernel._set_by_setup.items() if n in space and n not in frame.f_code.co_varnames
                 and not kernel._still_the_setups(n, space[n], ours)
                 and re.search(rf"(?<![\w.]){re.escape(n)}\s*[.(\[]", line)]
    if not found:
        return ""
    name, kind = found[0], type(frame.f_globals[found[0]]).__name__
    what = "None" if kind == "NoneType" else f"{'an' if kind[0] in 'aeiouAEIOU' else 'a'} {kind}"
    return (f"{name} is {what} here, not the module or function the notebook gave that name: a cell run since\n"
            f"assigned to it ({name} = ...). Run the setup cell again (or the cell that defined {name}), and give\n"
            f"your variable another name.")
