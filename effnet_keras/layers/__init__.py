from effnet_keras.layers.drop import StochasticDepth
from effnet_keras.layers.mbconv import block_letters
from effnet_keras.layers.mbconv import fused_mbconv_block
from effnet_keras.layers.mbconv import mbconv_block
from effnet_keras.layers.mbconv import squeeze_excite
