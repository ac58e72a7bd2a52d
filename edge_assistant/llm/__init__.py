"""The model stage: Gemma 4 through llama.cpp (engine), the prompt it reads
(chat_format) and the reply text it writes, made speakable (reply_text)."""
